"""What slmake corrects in the config ONNX Runtime GenAI's builder is handed (targets/ort_genai_config.py),
on transformers config objects; the builds themselves are in test_model_families (every family, e2e)."""

import pytest

transformers = pytest.importorskip("transformers")
from slmake.targets.ort_genai_config import Unsupported, adapt  # noqa: E402

SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 256}


def test_phi3_default_rope_gets_the_plain_graph_and_longrope_keeps_its_own():
    config = transformers.Phi3Config(**SMALL)            # original_max_position_embeddings defaults to 4096
    changes, options = adapt(config)
    assert config.original_max_position_embeddings == 256 and options == []
    assert changes[0].startswith("phi3: original_max_position_embeddings 4096 -> 256")
    long = transformers.Phi3Config(**SMALL, original_max_position_embeddings=128, rope_scaling={
        "rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8})
    long.rope_parameters.pop("type", None)               # as transformers 5 may save it
    changes, _ = adapt(long)
    assert long.original_max_position_embeddings == 128 and long.rope_parameters["type"] == "longrope"
    assert [c.split()[1] for c in changes] == ["rope_parameters.type"]


def test_gemma3_rope_thetas_come_back_and_scaled_rope_is_refused():
    config = transformers.Gemma3TextConfig(**SMALL, rope_theta=1e6, rope_local_base_freq=1e4)
    changes, options = adapt(config)
    assert (config.rope_local_base_freq, config.rope_theta) == (1e4, 1e6)
    assert options == ["windowed_kv_cache=false"]        # Gemma 3's sliding window (4096 by default)
    assert [c.split()[1] for c in changes] == ["rope_local_base_freq", "windowed_kv_cache=false"]
    scaled = transformers.Gemma3TextConfig(**SMALL, rope_scaling={"rope_type": "linear", "factor": 8.0})
    with pytest.raises(Unsupported, match=r"gemma3: RoPE scaling \{'full_attention': 'linear'\}.*precisions=\[\]"):
        adapt(scaled)


def test_a_sliding_window_applies_to_every_layer_as_in_transformers():
    config = transformers.MistralConfig(**SMALL, sliding_window=8)
    changes, options = adapt(config)
    assert config.layer_types == ["sliding_attention"] * 2 and options == ["windowed_kv_cache=false"]
    assert [c.split()[1] for c in changes] == ["windowed_kv_cache=false", "layer_types"]
    plain = transformers.LlamaConfig(**SMALL)
    assert adapt(plain) == ([], []) and getattr(plain, "layer_types", None) is None
