"""cluster=slurm: one `sbatch` job per fold, watched with `squeue` and `scontrol`, stopped with
`scancel`. Each job runs the fold's command line (the same interpreter and checkout, which must
be at the same path on every node, like the run dir) with the resources from cluster.*; its
output goes to the run dir's .cluster/fold_<k>-<jobid>.out. Needs only Slurm's client commands
(no accounting daemon: a job's end state is read from scontrol while Slurm keeps it)."""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from omegaconf import DictConfig

from src.cluster import Job
from src.errors import UserError

log = logging.getLogger(__name__)

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT", "SIGNALING"}
ENDED = {"CANCELLED": "was cancelled (scancel, or its time ran out before it started)", "FAILED": "failed",
         "TIMEOUT": "was killed at its Slurm time limit (cluster.time)", "NODE_FAIL": "was lost with its node",
         "OUT_OF_MEMORY": "was killed for memory (raise cluster.mem)", "PREEMPTED": "was preempted",
         "BOOT_FAIL": "was lost: its node did not boot", "DEADLINE": "ended at its Slurm deadline"}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@dataclass
class SlurmJob:
    ident: str
    poll_s: float
    reason: str = ""

    def state(self) -> tuple[str, int | None]:
        """The job's state and exit status as Slurm has them ("" when it no longer knows the job)."""
        out = _run(["squeue", "-h", "-j", self.ident, "-o", "%T"])
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0], None
        shown = _run(["scontrol", "-o", "show", "job", self.ident])
        state = re.search(r"\bJobState=(\S+)", shown.stdout)
        code = re.search(r"\bExitCode=(\d+):(\d+)", shown.stdout)
        if not state:
            return "", None
        status = int(code.group(1)) if code else None
        if code and int(code.group(2)):
            status = -int(code.group(2))
        return state.group(1), status

    def wait(self) -> int:
        while True:
            state, code = self.state()
            if state not in ACTIVE:
                break
            time.sleep(self.poll_s)
        if state in ("COMPLETED", ""):  # "": Slurm forgot it (MinJobAge): done.json says whether it finished
            return code or 0
        status = f" (exit status {code}; its output: .cluster/ in the run dir)" if code and code > 0 else ""
        self.reason = f"its Slurm job {self.ident} {ENDED.get(state, 'ended ' + state.lower())}{status}"
        return code if code else -signal.SIGTERM

    def stop(self) -> None:
        _run(["scancel", "--signal=TERM", "--full", self.ident])


class SlurmEngine:
    name, remote = "slurm", True

    def __init__(self, cfg: DictConfig) -> None:
        missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if not shutil.which(c)]
        if missing:
            raise UserError(f"cluster=slurm needs Slurm's client commands on PATH ({', '.join(missing)} not found): "
                            "run on a Slurm login node, or choose cluster=local or cluster=ray")
        self.cfg = cfg

    def start(self, job: Job) -> SlurmJob:
        c = self.cfg
        wrapped = shlex.join(["env", *(f"{k}={v}" for k, v in job.env.items()), *job.argv])
        args = ["sbatch", "--parsable", f"--job-name=kfold-{job.fold}", f"--cpus-per-task={job.threads}",
                f"--output={job.output}", f"--chdir={os.getcwd()}", "--export=ALL"]
        args += [f"--{key}={c[key]}" for key in ("partition", "time", "mem") if c.get(key)]
        args += [f"--gpus={c.gpus_per_job}"] if c.get("gpus_per_job") else []
        args += [*c.get("sbatch_args", []), "--wrap", wrapped]
        out = _run(args)
        if out.returncode != 0:
            raise UserError(f"sbatch refused fold {job.fold}'s job: {' '.join(out.stderr.split())} "
                            "(check cluster.partition, cluster.time, cluster.mem, cluster.sbatch_args)")
        ident = out.stdout.strip().split(";")[0]
        log.info("fold %d: Slurm job %s submitted (squeue -j %s; output %s)", job.fold, ident, ident, job.output)
        return SlurmJob(ident, float(c.get("poll_s", 5.0)))

    def close(self) -> None:
        pass
