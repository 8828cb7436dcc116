"""Text embeddings: templates, caching and its invalidation, precomputed vocabulary files, errors."""

import dataclasses

import pytest
import torch

from ovseg3d.errors import UserError
from ovseg3d.labels import load_label_set
from ovseg3d.text import vocabulary as vocab_mod
from ovseg3d.text.clip_model import ClipSpec, load_clip
from ovseg3d.text.vocabulary import build_vocabulary, encode_texts, load_vocabulary, save_vocabulary


def test_embeddings_average_templates_and_normalise(tiny_clip, tmp_path):
    v = build_vocabulary(["chair", "sofa"], tiny_clip, ("a {}", "a photo of a {}"), cache_dir=tmp_path)
    raw = encode_texts(["a chair", "a photo of a chair"], tiny_clip)
    expected = torch.nn.functional.normalize(raw.mean(0), dim=0)
    assert torch.allclose(v.embeddings[0], expected, atol=1e-6)
    assert torch.allclose(v.embeddings.norm(dim=1), torch.ones(2), atol=1e-6)
    label, score = v.classify(v.embeddings)
    assert label.tolist() == [0, 1] and torch.allclose(score, torch.ones(2), atol=1e-5)


def test_cache_hits_and_invalidation(tiny_clip, tmp_path, monkeypatch):
    calls = []
    real = vocab_mod.encode_texts
    monkeypatch.setattr(vocab_mod, "encode_texts", lambda texts, spec: calls.append(len(texts)) or real(texts, spec))
    a = build_vocabulary(["chair", "table"], tiny_clip, cache_dir=tmp_path)
    b = build_vocabulary(["chair", "table"], tiny_clip, cache_dir=tmp_path)
    assert calls == [2] and torch.equal(a.embeddings, b.embeddings)  # second call: a cache hit
    build_vocabulary(["chair", "table"], tiny_clip, ("a {} indoors",), cache_dir=tmp_path)  # new template
    build_vocabulary(["chair", "desk"], tiny_clip, cache_dir=tmp_path)  # new words
    build_vocabulary(["chair", "table"], dataclasses.replace(tiny_clip, seed=1), cache_dir=tmp_path)  # new weights
    assert calls == [2, 2, 2, 2]
    assert len(list(tmp_path.glob("*.pt"))) == 4


def test_weights_file_change_invalidates_the_cache(tiny_clip, tmp_path):
    model, _ = load_clip(tiny_clip)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    spec = ClipSpec(model=tiny_clip.model, pretrained=str(weights))
    key1 = spec.identity()
    torch.save({k: v * 1.01 for k, v in model.state_dict().items()}, weights)
    assert spec.identity() != key1


def test_loaded_weights_reproduce_the_model(tiny_clip, tmp_path):
    model, _ = load_clip(tiny_clip)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    a = encode_texts(["a lamp"], tiny_clip)
    b = encode_texts(["a lamp"], ClipSpec(model=tiny_clip.model, pretrained=str(weights)))
    assert torch.allclose(a, b, atol=1e-6)


def test_finer_prompt_names_map_back_to_their_class(tiny_clip, tmp_path):
    labels = load_label_set("nuscenes16")
    v = build_vocabulary(labels, tiny_clip, cache_dir=tmp_path)
    assert len(v) == 16 and v.embeddings.shape[0] == 43
    vehicle = labels.names.index("construction vehicle")
    rows = (v.row_class == vehicle).nonzero().flatten()
    assert len(rows) == 5  # bulldozer, excavator, concrete mixer, crane, dump truck
    assert (v.classify(v.embeddings[rows])[0] == vehicle).all()


def test_precomputed_vocabulary_file_round_trip(tiny_clip, tmp_path):
    v = build_vocabulary(["fire extinguisher", "door"], tiny_clip, cache_dir=tmp_path)
    save_vocabulary(tmp_path / "vocab.pt", v)
    w = load_vocabulary(tmp_path / "vocab.pt")
    assert w.names == v.names and torch.allclose(w.embeddings, v.embeddings)
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(UserError, match="not a valid vocabulary embedding file"):
        load_vocabulary(tmp_path / "bad.pt")


def test_bad_inputs_are_clear_errors(tiny_clip, tmp_path):
    with pytest.raises(UserError, match="vocabulary is empty"):
        build_vocabulary([], tiny_clip, cache_dir=tmp_path)
    with pytest.raises(UserError, match="vocabulary is empty or has an empty label"):
        build_vocabulary(["chair", "  "], tiny_clip, cache_dir=tmp_path)
    with pytest.raises(UserError, match="exactly one"):
        build_vocabulary(["chair"], tiny_clip, ("no placeholder",), cache_dir=tmp_path)
    with pytest.raises(UserError, match="unknown label set 'scannet21'"):
        load_label_set("scannet21")
    with pytest.raises(UserError, match="unknown open_clip model"):
        load_clip(ClipSpec(model="ViT-Q-99"))
    with pytest.raises(UserError, match="does not exist"):
        load_clip(ClipSpec(model=tiny_clip.model, pretrained=str(tmp_path / "missing.pt")))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="cannot load CLIP"):
        load_clip(ClipSpec(model=tiny_clip.model, pretrained=str(junk)))
    with pytest.raises(UserError, match="neither a weights file nor a pretrained tag"):
        load_clip(ClipSpec(model=tiny_clip.model, pretrained="no-such-tag"))


def test_random_weights_are_announced(tiny_clip, capsys):
    from ovseg3d.text import clip_model

    clip_model._warned.discard(tiny_clip.model)
    clip_model.warn_random(tiny_clip)
    assert "RANDOM weights" in capsys.readouterr().err
