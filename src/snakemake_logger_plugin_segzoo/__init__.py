"""A quiet console for Snakemake runs of segzoo (``snakemake --logger segzoo``; profiles/default turns it on).

One line when a job starts and one when it ends (rule, wildcards, duration, jobs done of the total), one line
for the plan of jobs, warnings and errors as Snakemake writes them; no rule blocks and no shell commands. The full
record stays where it always is: ``.snakemake/log/*.snakemake.log`` (every job with its command) and each rule's
``log:`` file. A dry run (``-n``) or ``--verbose`` prints exactly what Snakemake's own console prints, since that is
what those are asked for.

Snakemake finds this module by its name (the ``snakemake_logger_plugin_`` prefix) on the Python path.
"""

from __future__ import annotations

import re
import sys
import time
from logging import INFO, LogRecord

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

# Snakemake's progress chatter: said on every run, and nothing a reader acts on.
CHATTER = re.compile(r"^(Building DAG of jobs|Using shell:|Provided cores:|Provided resources:|Rules claiming more "
                     r"threads|Select jobs to execute|Execute \d+ jobs|Assuming unrestricted shared filesystem|"
                     r"host:|Job stats:|Finished jobid:|\d+ of \d+ steps)")


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        self.stream = sys.stdout if self.common_settings.stdout else sys.stderr
        self.passthrough = bool(self.common_settings.dryrun or self.common_settings.verbose)
        self.started: dict[int, tuple[str, float]] = {}
        self.finished: list[str] = []

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False  # Snakemake's own filter (quiet settings, debug-dag) applies

    @property
    def has_formatter(self) -> bool:
        return False  # Snakemake's formatter writes errors, warnings and the pass-through mode

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record: LogRecord) -> None:
        try:
            line = self.format(record) if self.passthrough else self.compact(record)
            if line:
                self.stream.write(line.rstrip("\n") + "\n")
                self.stream.flush()
        except Exception:  # a console line must never stop a run
            self.handleError(record)

    def compact(self, record: LogRecord) -> str | None:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_INFO:
            label = _label(record.rule_name, record.wildcards)
            self.started[record.jobid] = (label, time.monotonic())
            return f"{_clock()} start {label}"
        if event == LogEvent.JOB_FINISHED:
            label, began = self.started.pop(record.job_id, (f"job {record.job_id}", time.monotonic()))
            self.finished.append(f"{_clock()} done  {label} in {_duration(time.monotonic() - began)}")
            return None
        if event == LogEvent.PROGRESS:
            lines, self.finished = self.finished, []
            progress = f"[{record.done}/{record.total}]"
            return "\n".join(f"{line} {progress}" for line in lines) if lines else None
        if event == LogEvent.RUN_INFO:
            stats = dict(getattr(record, "stats", {}) or {})
            total = stats.pop("total", sum(stats.values()))
            return f"{total} jobs to run: " + ", ".join(f"{rule} {count}" for rule, count in stats.items())
        if event in (LogEvent.SHELLCMD, LogEvent.JOB_STARTED, LogEvent.WORKFLOW_STARTED, LogEvent.RESOURCES_INFO,
                     LogEvent.RULEGRAPH, LogEvent.DEBUG_DAG, LogEvent.GROUP_INFO):
            return None
        if event is None and record.levelno <= INFO and CHATTER.match(str(record.getMessage()).strip()):
            return None
        return self.format(record)  # errors, warnings, "Nothing to be done", the log file's path


def _label(rule: str, wildcards: dict | None) -> str:
    values = " ".join(f"{key}={value}" for key, value in (wildcards or {}).items())
    return f"{rule} {values}".strip()


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
