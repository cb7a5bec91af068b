"""cluster=local: fold jobs as subprocesses of the run's main process, watching it through a
pipe on their stdin (it closes the moment the main process dies, even by SIGKILL)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from src.cluster import Job, watch


@dataclass
class LocalJob:
    proc: subprocess.Popen
    reason: str = ""

    @property
    def ident(self) -> str:
        return str(self.proc.pid)

    def wait(self) -> int:
        code = self.proc.wait()
        self.proc.stdin.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


class LocalEngine:
    name, remote = "local", False

    def start(self, job: Job) -> LocalJob:
        # Its stderr is this process's: TensorFlow's start-up lines are kept off it in the job itself (src.quiet).
        env = {**os.environ, **job.env, watch.WATCH: "stdin", watch.ENGINE: "local"}
        return LocalJob(subprocess.Popen(job.argv, stdin=subprocess.PIPE, env=env))

    def close(self) -> None:
        pass
