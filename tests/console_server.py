"""The suite's console runner: a process that has imported torch and fairseq once and forks a
child per console command (``tests/fairseq_utils.console``), so that each of the suite's ~250
command runs skips the ~3 s a fresh interpreter spends importing them.

A child is the command as its console script runs it: ``sys.argv`` is the script's, the
script's own code runs as ``__main__`` (``sys.exit(main())`` of the installed entry point,
exiting through the interpreter), its exit status, stdout and stderr are the process's (files in
place of pipes), the environment and working directory are the caller's, and the script's own
module (``fairseq_cli.train``, ``nq_plugin.cli.zoo``, ...) and nq_plugin are imported fresh in
the child. What a fresh interpreter would have done while importing fairseq is replayed at the
child's first ``import fairseq``: fairseq's text-to-speech task configures the root logger
(stderr, DEBUG) when nothing configured it before -- ``fairseq-eval-lm`` and ``-generate`` log
to stderr because of it, ``fairseq-train`` (which configures logging before importing fairseq)
to stdout -- and the records it logged are emitted again.

Protocol (one request at a time): a JSON line on stdin ``{"name", "argv", "env", "cwd",
"stdin", "stdout", "stderr"}`` (file paths), answered by ``pid N`` when the child started and
``rc N`` when it ended (``os.waitstatus_to_exitcode``: minus the signal that killed it).
"""
import builtins
import json
import logging
import os
import sys


def _import_heavy():
    """torch and fairseq, with the root logger's changes and the records logged recorded (the
    child replays them); the root logger is left as a fresh interpreter has it."""
    root = logging.getLogger()
    records = []
    call_handlers = logging.Logger.callHandlers

    def recording(self, record):
        records.append(record)
        return call_handlers(self, record)

    logging.Logger.callHandlers = recording
    try:
        import torch  # noqa: F401
        import fairseq  # noqa: F401
        import fairseq.criterions  # noqa: F401
        import fairseq.models  # noqa: F401
        import fairseq.optim  # noqa: F401
        import fairseq.tasks  # noqa: F401
    finally:
        logging.Logger.callHandlers = call_handlers
    configured = (root.level, [(h.level, h.formatter) for h in root.handlers])
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(logging.WARNING)
    return configured, records


def _replay_on_first_fairseq_import(configured, records):
    """At the child's first ``import fairseq...``: what importing it did in a fresh process."""
    original = builtins.__import__

    def hook(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "fairseq" or name.startswith("fairseq.")):
            builtins.__import__ = original
            root = logging.getLogger()
            if not root.handlers:  # basicConfig in fairseq acts only on an unconfigured root
                root.setLevel(configured[0])
                for lvl, formatter in configured[1]:
                    handler = logging.StreamHandler(sys.stderr)
                    handler.setLevel(lvl)
                    handler.setFormatter(formatter)
                    root.addHandler(handler)
            for record in records:
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = hook


def _entry_point(name):
    from importlib.metadata import entry_points
    found = list(entry_points(group="console_scripts", name=name))
    return found[0] if found else None


def _child(request, configured, records):
    """Set the forked child up as the command's fresh process; returns the console script to
    run (as its ``__main__``)."""
    stdin = os.open(request["stdin"] or os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False, encoding=sys.stdout.encoding)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(request["argv"][0])  # a console script's own folder
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch
        torch.set_num_threads(int(threads))
    _replay_on_first_fairseq_import(configured, records)
    return request["argv"][0]


def _is_python_script(path):
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
        return first.startswith(b"#!") and b"python" in first
    except OSError:
        return False


def main():
    """Serve requests; returns only in a forked child, with the console script it is to run."""
    configured, records = _import_heavy()
    requests = sys.stdin.buffer
    replies = sys.stdout
    replies.write("ready\n")
    replies.flush()
    while True:
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        if _entry_point(request["name"]) is None or not _is_python_script(request["argv"][0]):
            replies.write("rc missing\n")
            replies.flush()
            continue
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                return _child(request, configured, records)
            except BaseException:
                os._exit(1)
        replies.write(f"pid {pid}\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(f"rc {os.waitstatus_to_exitcode(status)}\n")
        replies.flush()


if __name__ == "__main__":
    # In a child: the console script's own code as this process's __main__, so that its exit
    # (sys.exit(main())), an uncaught exception and the exit functions are the interpreter's
    # own, as in a fresh process (tracebacks start with one more frame: this line).
    __file__ = main()
    with open(__file__, encoding="utf-8") as _f:
        _code = compile(_f.read(), __file__, "exec")
    exec(_code)
