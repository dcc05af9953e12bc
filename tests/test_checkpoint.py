"""Checkpoints: safetensors + card round trip, and clear errors for every wrong file."""

import pickle

import pytest
import torch

from forensics.checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from forensics.model_card import ModelCard, default_classifier_card, default_segmenter_card
from forensics.models import ModelBuildError, build_model


def test_round_trip_restores_weights_and_card(tmp_path):
    card = default_segmenter_card((64, 64)).replace(version="seg-test", temperature=1.7)
    model = build_model(card)
    path = save_checkpoint(model, card, tmp_path / "seg")
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    card = default_classifier_card((64, 64))
    path = save_checkpoint(build_model(card), card, tmp_path / "cls", half=True)
    loaded, _ = load_checkpoint(path)
    assert next(loaded.parameters()).dtype == torch.float32


def test_card_is_embedded_when_the_json_is_lost(tmp_path):
    card = default_classifier_card((64, 64)).replace(version="embedded")
    path = save_checkpoint(build_model(card), card, tmp_path / "cls")
    path.with_suffix(".json").unlink()
    assert read_card(path).version == "embedded"


def test_wrong_architecture_names_the_file(tmp_path):
    card = default_segmenter_card((64, 64))
    path = save_checkpoint(build_model(card), card, tmp_path / "seg")
    wrong = card.replace(architecture={"arch": "Unet", "encoder_name": "resnet18", "classes": 1})
    wrong.write(path.with_suffix(".json"))
    with pytest.raises(CheckpointError, match="does not match architecture"):
        load_checkpoint(path)


def test_pickle_files_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)


def test_truncated_weights_are_reported(tmp_path):
    card = default_classifier_card((64, 64))
    path = save_checkpoint(build_model(card), card, tmp_path / "cls")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cls.safetensors"):
        load_checkpoint(path)


def test_classifier_given_where_segmenter_expected(tmp_path):
    card = default_classifier_card((64, 64))
    path = save_checkpoint(build_model(card), card, tmp_path / "cls")
    with pytest.raises(CheckpointError, match="--classifier"):
        load_checkpoint(path, expected_kind="segmenter")


def test_unknown_encoder_lists_choices():
    with pytest.raises(ModelBuildError, match="supported encoders"):
        build_model(ModelCard(kind="segmenter", architecture={"encoder_name": "nope"}, version="x"))


def test_validation_is_remembered_per_weights_and_card_and_a_misfit_is_never_remembered(tmp_path, monkeypatch):
    from forensics.checkpoint import read_checkpoint, validate_weights

    monkeypatch.setenv("FORGESCAN_CACHE_DIR", str(tmp_path / "cache"))
    card = default_segmenter_card((64, 64))
    data, card = read_checkpoint(save_checkpoint(build_model(card), card, tmp_path / "seg"))
    assert validate_weights(data, card) is True  # built now
    assert validate_weights(data, card) is False  # the same bytes and card: proven before, not rebuilt
    assert validate_weights(data, card.replace(version="retrained")) is True  # another card is proven again
    misfit = card.replace(architecture={"arch": "Unet", "encoder_name": "resnet18", "classes": 1})
    for _ in range(2):  # refused every time: a failure is never remembered
        with pytest.raises(CheckpointError, match="does not match architecture"):
            validate_weights(data, misfit, "seg.safetensors")


def test_a_card_refuses_mirror_views_other_than_one_two_or_four_and_on_a_classifier():
    assert default_segmenter_card().replace(mirror_views=4).mirror_views == 4
    with pytest.raises(ValueError, match="mirror_views must be one of"):
        default_segmenter_card().replace(mirror_views=3)
    with pytest.raises(ValueError, match="segmenter setting"):
        default_classifier_card().replace(mirror_views=2)


def test_the_triage_view_of_a_card_with_mirror_views_sees_the_image_once():
    card = default_segmenter_card().replace(resize_mode="native_tiles", tile_overlap=16, mirror_views=4)
    triage = card.for_triage()
    assert triage.resize_mode == "resize" and triage.mirror_views == 1
