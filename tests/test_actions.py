import numpy as np
import pytest
import torch

from diffusers_yan import DOOM_BUTTONS, ActionSpace


def test_default_space_is_the_eight_doom_buttons():
    space = ActionSpace()
    assert space.buttons == DOOM_BUTTONS and space.dim == 8
    assert space.key_bindings["KeyW"] == "MOVE_FORWARD"


@pytest.mark.parametrize(
    "action, pressed",
    [
        ("MOVE_FORWARD", ["MOVE_FORWARD"]),
        ("MOVE_FORWARD+TURN_LEFT", ["MOVE_FORWARD", "TURN_LEFT"]),
        ("NOOP", []),
        ("", []),
        (["ATTACK", "USE"], ["ATTACK", "USE"]),
        ({"TURN_RIGHT": 1, "ATTACK": True}, ["TURN_RIGHT", "ATTACK"]),
        ([0, 0, 0, 0, 0, 0, 1, 0], ["ATTACK"]),
        (np.eye(8)[2], ["MOVE_LEFT"]),
        (torch.eye(8)[5], ["TURN_RIGHT"]),
    ],
)
def test_encode_forms(action, pressed):
    space = ActionSpace()
    vec = space.encode(action)
    assert vec.shape == (8,) and vec.dtype == torch.float32
    assert space.pressed(vec) == pressed


def test_sequence_forms_and_parse():
    space = ActionSpace()
    assert space.encode_sequence(["MOVE_FORWARD", "TURN_LEFT"]).shape == (2, 8)
    # one step with two buttons held
    seq = space.encode_sequence([["MOVE_FORWARD", "TURN_LEFT"]])
    assert seq.shape == (1, 8) and seq.sum() == 2
    assert space.encode_sequence("MOVE_FORWARD").shape == (1, 8)
    assert space.encode_sequence("MOVE_FORWARD*3,TURN_LEFT+ATTACK*2").shape == (5, 8)
    assert space.encode_sequence(torch.zeros(4, 8)).shape == (4, 8)
    assert space.encode_sequence([0] * 8).shape == (1, 8)
    assert space.parse("MOVE_FORWARD*2,NOOP") == ["MOVE_FORWARD", "MOVE_FORWARD", "NOOP"]


def test_axes_are_scaled_and_round_trip():
    space = ActionSpace(buttons=("ATTACK",), axes={"TURN_LEFT_RIGHT_DELTA": (-45, 45)})
    vec = space.encode({"TURN_LEFT_RIGHT_DELTA": 22.5, "ATTACK": 1})
    assert torch.allclose(vec, torch.tensor([1.0, 0.5]))
    assert space.decode(vec) == {"ATTACK": 1.0, "TURN_LEFT_RIGHT_DELTA": 22.5}
    assert ActionSpace.from_dict(space.to_dict()) == space


def test_config_round_trip_and_keyboard():
    space = ActionSpace(buttons=("MOVE_FORWARD", "ATTACK"), key_bindings={"KeyW": "MOVE_FORWARD", "KeyJ": "ATTACK"})
    again = ActionSpace.from_dict(space.to_dict())
    assert again == space
    vec = again.keys_to_action({"KeyW", "KeyJ", "Escape"})  # unbound keys are ignored
    assert again.pressed(vec) == ["MOVE_FORWARD", "ATTACK"]
    assert ActionSpace.from_dict(None) == ActionSpace()
    assert ActionSpace.from_dict(["A", "B"]).buttons == ("A", "B")


@pytest.mark.parametrize(
    "bad, err, words",
    [
        ("JUMP", ValueError, ["JUMP", "MOVE_FORWARD"]),
        (["MOVE_FORWARD", "FLY"], ValueError, ["FLY"]),
        ([1, 0, 0], ValueError, ["length 8"]),
        ([2, 0, 0, 0, 0, 0, 0, 0], ValueError, ["0 or 1"]),
        ({"ATTACK": 0.5}, ValueError, ["ATTACK"]),
        (object(), TypeError, ["object"]),
        ([["MOVE_FORWARD", 3]], TypeError, ["3"]),
    ],
)
def test_bad_actions_name_the_argument(bad, err, words):
    space = ActionSpace()
    with pytest.raises(err) as info:
        space.encode_sequence(bad if isinstance(bad, list) and bad and isinstance(bad[0], list) else [bad])
    msg = str(info.value)
    assert "`actions[0]`" in msg
    for w in words:
        assert w in msg


def test_bad_sequences_and_specs():
    space = ActionSpace()
    with pytest.raises(ValueError, match="empty"):
        space.encode_sequence([])
    with pytest.raises(ValueError, match="None"):
        space.encode_sequence(None)
    with pytest.raises(ValueError, match="repeat count"):
        space.parse("MOVE_FORWARD*x")
    with pytest.raises(ValueError, match="shape"):
        space.encode_sequence(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="unknown buttons"):
        ActionSpace(buttons=("A",), key_bindings={"KeyW": "B"})
    with pytest.raises(ValueError, match="duplicated"):
        ActionSpace(buttons=("A", "A"))
    with pytest.raises(ValueError, match="low < high"):
        ActionSpace(buttons=("A",), axes={"X": (1, -1)})
