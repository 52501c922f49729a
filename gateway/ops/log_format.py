"""Log lines as text or as one JSON object per line (``--log-format json``).

A JSON line holds ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``exc_info`` when
there is one, and an access line's fields (``gateway.ops.request_log``) at the top level.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line["message"] = "access"
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger's one handler (stderr) at ``level``, in ``log_format`` (text | json)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
