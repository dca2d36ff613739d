"""The client's failures and the exit codes the CLI gives them (see `cli` for what each code means)."""
from __future__ import annotations

import signal

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ClientError(RuntimeError):
    """A failure the CLI reports with `exit_code`."""

    exit_code = EXIT_FAILED


class UsageError(ClientError):
    """Bad arguments or a workflow that does not fit them (unknown title, input or file)."""

    exit_code = EXIT_USAGE


class ServerUnreachable(ClientError):
    """No ComfyUI answered at the given address."""

    exit_code = EXIT_UNREACHABLE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (a CI job timing out, a closed terminal): handled like Ctrl-C, so the prompt is
    stopped on the server; the CLI then exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
