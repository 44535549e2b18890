"""The request/response mode of the Space: "play these actions, get the clip", as an ordinary Gradio event.

This is the mode for Spaces on shared GPUs (ZeroGPU), where a GPU is lent per call and not held between calls, so
a live game loop is not possible. There (``SPACES_ZERO_GPU=true``), each clip is played inside a ``spaces.GPU``
function by a :class:`~diffusers_yan.space.zerogpu.ZeroGPUClipRunner`; elsewhere, by
:meth:`SessionManager.play_clip` on the manager's thread pool, sharing the play slots with the live sessions.
"""

from __future__ import annotations

from .sessions import SessionManager, SpaceError
from .zerogpu import DEFAULT_SECONDS_PER_ACTION, ZeroGPUClipRunner, is_zerogpu_space


DEFAULT_CLIP_ACTIONS = "MOVE_FORWARD*8,TURN_LEFT*4,MOVE_FORWARD*8,TURN_RIGHT*4,ATTACK*2"
CLIP_API_NAME = "clip"  # the event's API name: `gradio_client.Client(url).predict(..., api_name="/clip")`


def build_clip_blocks(
    manager: SessionManager,
    zerogpu: bool | None = None,
    gpu_seconds_per_action: float = DEFAULT_SECONDS_PER_ACTION,
):
    """The clip mode's Gradio Blocks.

    Args:
        manager: the Space's session manager.
        zerogpu: play clips through ``spaces.GPU`` (ZeroGPU hardware); ``None``: detect it from the environment.
        gpu_seconds_per_action: on ZeroGPU, the GPU time requested per action of a clip (see ``zerogpu.py``).
    """
    import gradio as gr

    models = list(manager.pipelines)
    if zerogpu is None:
        zerogpu = is_zerogpu_space()

    def start_choices(model: str) -> list[str]:
        n = len(manager.pipelines[model].start_frames)
        return [f"start frame {i + 1}" for i in range(n)]

    def clip_options(model, start, upload_path, seed) -> dict:
        """The page's inputs as `play_clip` options (raises SpaceError)."""
        if not isinstance(seed, (int, float)) or int(seed) != seed:
            raise SpaceError(f"The seed must be a whole number, got {seed!r}.")
        upload = None
        if upload_path:
            with open(upload_path, "rb") as f:  # a temp file Gradio wrote for this request
                upload = f.read()
        elif not start:
            raise SpaceError("Choose a start frame or upload a start image.")
        index = start_choices(model).index(start) if start and upload is None else 0
        return {"model": model, "start_index": index, "upload": upload, "seed": int(seed)}

    if zerogpu:
        runner = ZeroGPUClipRunner(manager, seconds_per_action=gpu_seconds_per_action)

        # synchronous on purpose: Gradio runs it in a worker thread with the request's context, where the blocking
        # `spaces.GPU` call belongs (see zerogpu.py)
        def make_clip(model, start, upload_path, actions, seed):
            try:
                return runner(actions, **clip_options(model, start, upload_path, seed))
            except SpaceError as e:
                raise gr.Error(str(e)) from None

        # ZeroGPU lends a GPU per call; as many calls at once as live worlds elsewhere (`SpaceConfig.max_sessions`)
        concurrency_limit = manager.config.max_sessions
        note = "Each clip runs on a GPU lent for that request (ZeroGPU)."
    else:

        async def make_clip(model, start, upload_path, actions, seed):
            try:
                return await manager.play_clip(actions, **clip_options(model, start, upload_path, seed))
            except SpaceError as e:
                raise gr.Error(str(e)) from None

        # our own play-slot queue limits concurrency (shared with the live sessions), so Gradio's is not capped
        concurrency_limit = None
        note = (
            "Request/response mode (works on shared-GPU Spaces). For live keyboard play, go back to the"
            " [game page](../)."
        )

    with gr.Blocks(title="Yan - clip mode") as blocks:
        gr.Markdown(f"## Yan-Sim: play a sequence of actions, get the clip\n{note}")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(models, value=models[0], label="Model (Yan-Sim)")
                first = start_choices(models[0])
                start = gr.Dropdown(first, value=first[0] if first else None, label="Start frame (bundled)")
                upload = gr.Image(type="filepath", label="...or upload a start image (any size)")
                buttons = ", ".join(manager.pipelines[models[0]].action_space.buttons)
                actions = gr.Textbox(
                    DEFAULT_CLIP_ACTIONS,
                    label="Actions",
                    info=f"NAME*count, A+B for held combinations, NOOP. Buttons: {buttons}.",
                )
                seed = gr.Number(0, precision=0, label="Seed")
                run = gr.Button("Play these actions", variant="primary")
            with gr.Column():
                video = gr.Video(label="Clip", autoplay=True)
        model.change(lambda m: gr.Dropdown(choices=start_choices(m), value=None), model, start)
        run.click(
            make_clip,
            [model, start, upload, actions, seed],
            video,
            api_name=CLIP_API_NAME,
            concurrency_limit=concurrency_limit,
        )
    return blocks
