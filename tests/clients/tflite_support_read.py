"""Runs in the TFLite Support environment: the Task Library's metadata reader (MetadataDisplayer) on each
model. Request {"models": [...]}; answer {model: {"json": {...}, "packed": [...], "labels": "..."} |
{"error": "..."}}."""
import json
import sys

from tflite_support import metadata

request = json.load(sys.stdin)
answer = {}
for model in request["models"]:
    try:
        shown = metadata.MetadataDisplayer.with_model_file(model)
        packed = shown.get_packed_associated_file_list()
        answer[model] = {"json": json.loads(shown.get_metadata_json()), "packed": packed,
                         "labels": shown.get_associated_file_buffer("labels.txt").decode("utf-8")
                         if "labels.txt" in packed else None}
    except Exception as exc:
        answer[model] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(answer))
