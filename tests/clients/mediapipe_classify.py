"""Runs in the MediaPipe environment: MediaPipe Tasks' ImageClassifier on each model and image, as an app
would (the model file as exported, the image as RGB pixels). Request {"models": [...], "images": [...]};
answer {model: {"scores": {image: {label: score}}} | {"error": "..."}}."""
import json
import sys

import numpy as np
from PIL import Image

import mediapipe as mp
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core import base_options

request = json.load(sys.stdin)
answer = {}
for model in request["models"]:
    try:
        options = vision.ImageClassifierOptions(base_options=base_options.BaseOptions(model_asset_path=model),
                                                max_results=-1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            scores = {}
            for path in request["images"]:
                pixels = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)
                result = classifier.classify(image)
                scores[path] = {c.category_name: float(c.score) for c in result.classifications[0].categories}
        answer[model] = {"scores": scores}
    except Exception as exc:  # the client's own words are the test's evidence
        answer[model] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(answer))
