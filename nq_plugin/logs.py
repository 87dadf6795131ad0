"""Messages said once per process (which kernel or loop runs, why a fallback happened)."""
import logging


class LogOnce:
    """``log_once(key, message, level)`` logs ``message`` the first time ``key`` is seen."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.seen = set()

    def __call__(self, key: str, message: str, level: int = logging.INFO) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.logger.log(level, message)
