"""Export every event's JSON Schema to ``schemas/json/<tag>.schema.json``.

Producers in other languages validate against these files. ``python -m schemas.export``
rewrites them; a test fails when the committed files differ from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.events import EVENT_TYPES

JSON_DIR = Path(__file__).resolve().parent / "json"


def render_schemas() -> dict[str, str]:
    """``{file name: JSON text}`` for every event type."""
    out = {}
    for tag, cls in sorted(EVENT_TYPES.items()):
        schema = cls.model_json_schema(mode="validation")
        schema["$id"] = f"https://sentryml.dev/schemas/{tag}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{tag}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(folder: Path = JSON_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export(Path(sys.argv[1]) if len(sys.argv) > 1 else JSON_DIR):
        print(path)
