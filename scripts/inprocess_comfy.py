"""ComfyUI's own execution engine in this process, with this pack loaded as the server loads it (no HTTP).

What ComfyUI's `main.py` does for a prompt, minus the web server: command-line settings (`--cpu`,
`--use-pytorch-cross-attention`, `--base-directory`, only this pack among custom nodes, no previews), the
built-in extra nodes and the pack through `nodes.init_extra_nodes`, a `server.PromptServer` object (nodes and the
executor talk to `PromptServer.instance`; it is never started, and with no client its messages go nowhere), then
per prompt `execution.validate_prompt` and `execution.PromptExecutor.execute` in the calling thread. Used by
scripts/bench_long_video.py so a `TorchDispatchMode` entered in this thread sees every op the nodes run.

The base directory must hold `custom_nodes/magicpose` (a link to the pack) and the models, as
tests/support/server.py `ComfyServer.prepare_base` makes it.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class InProcessComfy:
    def __init__(self, comfy_path: Path, base_dir: Path, free_ram_gib: float | None = None) -> None:
        """`free_ram_gib`: the free RAM ComfyUI sees on the CPU (it sizes VAE batches and attention chunks by it),
        fixed so that runs do not depend on what else the machine is doing; None: the real figure."""
        comfy_path, base_dir = Path(comfy_path).resolve(), Path(base_dir).resolve()
        if str(comfy_path) not in sys.path:
            sys.path.insert(0, str(comfy_path))          # ComfyUI first: our nodes/ must not shadow its nodes
        import comfy.cli_args as cli

        a = cli.args
        a.cpu, a.use_pytorch_cross_attention, a.disable_api_nodes = True, True, True
        a.base_directory = str(base_dir)
        a.disable_all_custom_nodes, a.whitelist_custom_nodes = True, ["magicpose"]
        a.preview_method = cli.LatentPreviewMethod.NoPreviews
        a.database_url = "sqlite:///:memory:"
        os.chdir(comfy_path)

        import execution
        import folder_paths  # noqa: F401  (reads --base-directory)
        import server

        import nodes

        self._execution = execution
        if free_ram_gib is not None:
            import comfy.model_management as mm

            real, fixed = mm.get_free_memory, int(free_ram_gib * 1024 ** 3)

            def get_free_memory(dev=None, torch_free_too=False):
                if dev is not None and getattr(dev, "type", dev) != "cpu":
                    return real(dev, torch_free_too)
                return (fixed, fixed) if torch_free_too else fixed

            mm.get_free_memory = get_free_memory
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server = server.PromptServer(self.loop)
        self.loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        missing = [n for n in ("MagicPoseSample", "MagicPoseExtractPose") if n not in nodes.NODE_CLASS_MAPPINGS]
        if missing:
            raise RuntimeError(f"the pack did not load in-process (missing {missing}); is "
                               f"{base_dir}/custom_nodes/magicpose a link to the pack?")
        self.executor = execution.PromptExecutor(self.server, cache_type=False,
                                                 cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})

    def run(self, prompt: dict) -> dict:
        """Validate and execute one API-format prompt; returns the UI outputs by node id. Raises on any error."""
        pid = uuid.uuid4().hex
        valid = self.loop.run_until_complete(self._execution.validate_prompt(pid, prompt, None))
        if not valid[0]:
            raise RuntimeError(f"prompt rejected: {valid[1]} {valid[3]}")
        self.executor.execute(prompt, pid, {}, valid[2])
        if not self.executor.success:
            errors = [d for e, d in self.executor.status_messages if e == "execution_error"]
            detail = (f"{errors[0].get('exception_type')}: {errors[0].get('exception_message')}" if errors
                      else "interrupted")
            raise RuntimeError(f"prompt failed: {detail}")
        return self.executor.history_result.get("outputs", {})
