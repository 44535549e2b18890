"""The request/response mode of the Space: "play these actions, get the clip", as an ordinary Gradio event.

This is the mode for Spaces on shared GPUs (ZeroGPU), where a GPU is lent per call and not held between calls, so
a live game loop is not possible. There (``SPACES_ZERO_GPU=true``), each clip is checked by
:meth:`SessionManager.prepare_clip`, then rendered inside a ``spaces.GPU`` function by a
:class:`~diffusers_yan.space.zerogpu.ZeroGPUClipRunner`; elsewhere, by :meth:`SessionManager.play_clip` on the
manager's thread pool, sharing the play slots with the live sessions.

Yan-Sim and Yan-Gen models alike: the page shows a prompt box for Yan-Gen models, and no start frame or upload for
text-to-video ones. The event's inputs (also those of its API, ``/clip``) are the model, the bundled start frame,
the uploaded start image, the actions, the seed and the prompt (ignored for Yan-Sim models).
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
    infos = {name: manager.model_info(name) for name in models}
    if zerogpu is None:
        zerogpu = is_zerogpu_space()

    def model_of(model) -> dict:
        if model not in infos:
            raise SpaceError(f"Unknown model {model!r}; available: {models}.")
        return infos[model]

    def is_gen(model: str) -> bool:
        return infos[model]["kind"] == "yan-gen"

    def start_choices(model: str) -> list[str]:
        return [f"start frame {i + 1}" for i in range(infos[model]["num_start_frames"])]

    def takes_actions(model: str, actions) -> bool:
        try:
            manager.pipelines[model].action_space.encode_sequence(actions, arg="actions")
        except (ValueError, TypeError):
            return False
        return True

    def default_actions(model: str) -> str:
        if takes_actions(model, DEFAULT_CLIP_ACTIONS):
            return DEFAULT_CLIP_ACTIONS
        return ",".join(f"{button}*2" for button in infos[model]["buttons"][:3])

    def actions_help(model: str) -> str:
        info = infos[model]
        per_action = f" One action per block of {info['frames_per_action']} frames." if is_gen(model) else ""
        return f"NAME*count, A+B for held combinations, NOOP. Buttons: {', '.join(info['buttons'])}.{per_action}"

    def clip_options(model, start, upload_path, seed, prompt) -> dict:
        """The page's inputs as `play_clip` / `prepare_clip` options (raises SpaceError)."""
        info = model_of(model)
        if not isinstance(seed, (int, float)) or int(seed) != seed:
            raise SpaceError(f"The seed must be a whole number, got {seed!r}.")
        index, upload = 0, None
        if info["takes_image"]:  # text-to-video models start from the prompt: no start frame or upload
            if upload_path:
                with open(upload_path, "rb") as f:  # a temp file Gradio wrote for this request
                    upload = f.read()
            elif not info["num_start_frames"]:
                raise SpaceError(f"Model {model!r} ships no start frames: upload a start image.")
            elif start not in start_choices(model):
                raise SpaceError("Choose a start frame or upload a start image.")
            else:
                index = start_choices(model).index(start)
        options = {"model": model, "start_index": index, "upload": upload, "seed": int(seed)}
        if is_gen(model):
            options["prompt"] = prompt or ""
        return options

    if zerogpu:
        runner = ZeroGPUClipRunner(manager, seconds_per_action=gpu_seconds_per_action)

        # synchronous on purpose: Gradio runs it in a worker thread with the request's context, where the blocking
        # `spaces.GPU` call belongs (see zerogpu.py)
        def make_clip(model, start, upload_path, actions, seed, prompt):
            try:
                return runner(actions, **clip_options(model, start, upload_path, seed, prompt))
            except SpaceError as e:
                raise gr.Error(str(e)) from None

        # ZeroGPU lends a GPU per call; as many calls at once as live worlds elsewhere (`SpaceConfig.max_sessions`)
        concurrency_limit = manager.config.max_sessions
        note = "Each clip runs on a GPU lent for that request (ZeroGPU)."
    else:

        async def make_clip(model, start, upload_path, actions, seed, prompt):
            try:
                return await manager.play_clip(actions, **clip_options(model, start, upload_path, seed, prompt))
            except SpaceError as e:
                raise gr.Error(str(e)) from None

        # our own play-slot queue limits concurrency (shared with the live sessions), so Gradio's is not capped
        concurrency_limit = None
        note = (
            "Request/response mode (works on shared-GPU Spaces). For live keyboard play, go back to the"
            " [game page](../)."
        )

    def on_model_change(model, current_actions):
        """Show the inputs the chosen model takes; keep the typed actions if it takes them, else its default."""
        info = model_of(model)
        choices = start_choices(model)
        actions = current_actions if takes_actions(model, current_actions) else default_actions(model)
        return (
            gr.Dropdown(choices=choices, value=choices[0] if choices else None, visible=bool(choices)),
            gr.Image(visible=info["takes_image"]),
            gr.Textbox(visible=is_gen(model)),
            gr.Textbox(value=actions, info=actions_help(model)),
        )

    first = models[0]
    with gr.Blocks(title="Yan - clip mode") as blocks:
        gr.Markdown(f"## Yan: play a sequence of actions, get the clip\n{note}")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(models, value=first, label="Model", elem_id="clip-model")
                choices = start_choices(first)
                start = gr.Dropdown(
                    choices,
                    value=choices[0] if choices else None,
                    label="Start frame (bundled)",
                    visible=bool(choices),
                    elem_id="clip-start",
                )
                upload = gr.Image(
                    type="filepath",
                    label="...or upload a start image (any size)",
                    visible=infos[first]["takes_image"],
                    elem_id="clip-upload",
                )
                prompt = gr.Textbox(
                    "",
                    label="Prompt (Yan-Gen)",
                    info="The text the world is generated from.",
                    visible=is_gen(first),
                    elem_id="clip-prompt",
                )
                actions = gr.Textbox(
                    default_actions(first), label="Actions", info=actions_help(first), elem_id="clip-actions"
                )
                seed = gr.Number(0, precision=0, label="Seed")
                run = gr.Button("Play these actions", variant="primary")
            with gr.Column():
                video = gr.Video(label="Clip", autoplay=True)
        model.change(on_model_change, [model, actions], [start, upload, prompt, actions])
        run.click(
            make_clip,
            [model, start, upload, actions, seed, prompt],
            video,
            api_name=CLIP_API_NAME,
            concurrency_limit=concurrency_limit,
        )
    return blocks
