"""Backbone registry: names, flat graphs, preprocessing, weights resolution and errors."""
import h5py
import numpy as np
import pytest

from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, count_macs, get_backbone, list_backbones


def _nested(model):
    import tf_keras

    return [l.name for l in model.layers if isinstance(l, tf_keras.Model)]


def test_registry_has_the_required_backbones():
    names = {b.name for b in list_backbones()}
    required = {f"mobilenet_v1_{a}" for a in ("025", "050", "075", "100")}
    required |= {f"mobilenet_v2_{a}" for a in ("035", "050", "075", "100")}
    required |= {"mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
                 "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_b0", "resnet50", "resnet50_v2",
                 "inception_v3", "densenet121", "xception", "convnext_tiny"}
    required |= {f"efficientnet_lite{i}" for i in range(5)}
    assert required <= names
    assert get_backbone("inception_v3").default_size == 299
    assert get_backbone("resnet50").preprocessing["channel_order"] == "BGR"


@pytest.mark.parametrize("name,size", [("inception_v3", 75), ("resnet50", 32), ("mobilenet_v1_100", 32)])
def test_the_study_backbones_build_flat(name, size):
    model, info = build_classifier(name, 2, size, weights="none")
    assert not _nested(model)
    assert model.output_shape == (None, 2)
    assert model.layers[-1].name == "head_dense" and info["input_size"] == size
    x = np.zeros((1, size, size, 3), np.float32)
    np.testing.assert_allclose(model(x).numpy().sum(), 1.0, rtol=1e-5)


def test_efficientnet_lite_from_keras_cv_is_flat():
    pytest.importorskip("keras_cv")
    model, _ = build_classifier("efficientnet_lite0", 3, 64, weights="none")
    assert not _nested(model) and model.output_shape == (None, 3)
    assert 3.0e6 < model.count_params() < 4.0e6  # EfficientNet-Lite0 without top ~3.4M


def test_macs_match_the_published_mobilenet_v2():
    model, _ = build_classifier("mobilenet_v2_100", 2, 224, weights="none")
    assert abs(count_macs(model) - 300e6) / 300e6 < 0.03  # paper: 300M multiply-adds


def test_macs_count_separable_convolutions():
    """Xception is made of SeparableConv2D: depthwise (3x3 per input channel) then pointwise."""
    import tf_keras

    inp = tf_keras.Input((8, 8, 4))
    x = tf_keras.layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2)(inp)
    model = tf_keras.Model(inp, x)
    assert count_macs(model) == 8 * 8 * (4 * 2 * 9 + 4 * 2 * 6)


def test_imagenet_weights_from_a_local_folder_are_the_real_ones(weights_dir):
    model, info = build_classifier("mobilenet_v2_035", 2, 64, weights="imagenet", weights_dir=weights_dir)
    assert info["weights"].endswith("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
    with h5py.File(info["weights"], "r") as f:
        stored = f["Conv1"]["Conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(model.get_layer("Conv1").kernel.numpy(), stored)


def test_weights_dir_from_environment(weights_dir, monkeypatch):
    monkeypatch.setenv("GRAM_TF_WEIGHTS_DIR", str(weights_dir))
    _, info = build_classifier("mobilenet_v1_025", 2, 32, weights="imagenet")
    assert info["weights"].endswith("mobilenet_2_5_224_tf_no_top.h5")


def test_weights_for_the_wrong_architecture_is_one_line(weights_dir):
    wrong = weights_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    with pytest.raises(GramTFError) as e:
        build_classifier("mobilenet_v2_050", 2, 32, weights=str(wrong))
    msg = str(e.value)
    assert "does not fit backbone mobilenet_v2_050" in msg and "\n" not in msg
    assert "0.5_224_no_top.h5" in msg


def test_offline_imagenet_names_the_file_to_place(tmp_path, monkeypatch):
    import tf_keras.src.utils.data_utils as du

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no network")

    monkeypatch.setattr(du, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("GRAM_TF_WEIGHTS_DIR", raising=False)
    with pytest.raises(GramTFError) as e:
        build_classifier("resnet50", 2, 32, weights="imagenet")
    msg = str(e.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg and "GRAM_TF_WEIGHTS_DIR" in msg
    assert str(tmp_path / "keras" / "models") in msg


def test_bad_names_sizes_and_files():
    with pytest.raises(GramTFError, match="unknown backbone 'resnet51'.*resnet50"):
        build_classifier("resnet51", 2)
    with pytest.raises(GramTFError, match="below inception_v3's minimum of 75"):
        build_classifier("inception_v3", 2, 64, weights="none")
    with pytest.raises(GramTFError, match="weights file .* not found"):
        build_classifier("resnet50", 2, 32, weights="/nope/w.h5")
    with pytest.raises(GramTFError, match="no standard Keras ImageNet"):
        build_classifier("efficientnet_lite0", 2, 32, weights="imagenet")


def test_load_model_matches_tf_keras_loader(tmp_path):
    """gram_tf reads the weights from a temporary copy of the archive's HDF5 member (zipfile's
    backward seeks made big models load in minutes): same layers, weights and outputs as
    tf_keras' own loader, custom layers included."""
    import tf_keras

    from gram_tf.models import custom_objects, load_model, save_model

    model, _ = build_classifier("poolformer_s12", 3, 32, weights="none")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.standard_normal(w.shape).astype(w.dtype) * 0.01 for w in model.get_weights()])
    path = save_model(model, tmp_path / "m.keras")
    ours = load_model(path)
    with tf_keras.utils.custom_object_scope(custom_objects()):
        ref = tf_keras.models.load_model(str(path), compile=False, safe_mode=True)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in ref.layers]
    for a, b in zip(ours.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(ours(x).numpy(), ref(x).numpy())
