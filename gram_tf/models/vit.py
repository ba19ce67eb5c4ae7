"""ViT / DeiT backbones (filled in by the transformer work)."""


def custom_objects() -> dict:
    return {}
