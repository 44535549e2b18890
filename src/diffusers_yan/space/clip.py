"""The request/response mode of the Space: "play these actions, get the clip", as an ordinary Gradio event.

This is the mode for Spaces on shared GPUs (ZeroGPU), where a GPU is lent per call and not held between calls, so
a live game loop is not possible. (Not done yet: wrapping the model call in ``spaces.GPU`` when the ``spaces``
package is installed, which a ZeroGPU Space needs.)
"""

from __future__ import annotations

from .sessions import SessionManager, SpaceError


DEFAULT_CLIP_ACTIONS = "MOVE_FORWARD*8,TURN_LEFT*4,MOVE_FORWARD*8,TURN_RIGHT*4,ATTACK*2"


def build_clip_blocks(manager: SessionManager):
    import gradio as gr

    models = list(manager.pipelines)

    def start_choices(model: str) -> list[str]:
        n = len(manager.pipelines[model].start_frames)
        return [f"start frame {i + 1}" for i in range(n)]

    async def make_clip(model, start, upload_path, actions, seed):
        try:
            if not isinstance(seed, (int, float)) or int(seed) != seed:
                raise SpaceError(f"The seed must be a whole number, got {seed!r}.")
            upload = None
            if upload_path:
                with open(upload_path, "rb") as f:  # a temp file Gradio wrote for this request
                    upload = f.read()
            elif not start:
                raise SpaceError("Choose a start frame or upload a start image.")
            index = start_choices(model).index(start) if start and upload is None else 0
            return await manager.play_clip(actions, model=model, start_index=index, upload=upload, seed=int(seed))
        except SpaceError as e:
            raise gr.Error(str(e)) from None

    with gr.Blocks(title="Yan - clip mode") as blocks:
        gr.Markdown(
            "## Yan-Sim: play a sequence of actions, get the clip\n"
            "Request/response mode (works on shared-GPU Spaces). For live keyboard play, go back to the"
            " [game page](../)."
        )
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
        # our own play-slot queue limits concurrency (shared with the live sessions), so Gradio's is not capped
        run.click(make_clip, [model, start, upload, actions, seed], video, concurrency_limit=None)
    return blocks
