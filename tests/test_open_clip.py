"""open_clip runs offline: random weights encode text, and weights load back from a local file."""

import json

import open_clip
import pytest
import torch

TINY_CFG = {  # also in conftest (TINY_CLIP_CFG); kept here so this test reads alone
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture
def tiny_model_name(tmp_path):
    path = tmp_path / "ovseg3d-test-tiny.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return path.stem


def test_random_weights_encode_text_offline(tiny_model_name):
    torch.manual_seed(0)
    model = open_clip.create_model(tiny_model_name, pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer(tiny_model_name)
    tokens = tokenizer(["a chair in a scene", "a fire extinguisher in a scene"])
    assert tokens.shape == (2, 77)
    assert tokens[0, 0].item() == tokenizer.sot_token_id
    with torch.no_grad():
        emb = model.encode_text(tokens, normalize=True)
    assert emb.shape == (2, 64)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])  # different words, different embeddings


def test_weights_load_back_from_a_local_checkpoint(tiny_model_name, tmp_path):
    torch.manual_seed(1)
    model = open_clip.create_model(tiny_model_name, pretrained=None).eval()
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    loaded = open_clip.create_model(tiny_model_name, pretrained=str(ckpt)).eval()
    tokens = open_clip.get_tokenizer(tiny_model_name)(["a sofa"])
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))
        assert torch.equal(model.encode_image(image), loaded.encode_image(image))
