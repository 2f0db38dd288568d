"""Configuration of SluiceForCausalLM, the remote-code model `sluice export hf` writes for
Sluice variants that no stock transformers class computes (docs/interop.md).

config.json holds the usual transformers fields (hidden_size, num_hidden_layers, ...) for
generic tools, and under "sluice" the checkpoint's whole `model:` section with Sluice's own
keys (docs/config.md), which is what modeling_sluice.py reads.
"""
from transformers import PretrainedConfig


class SluiceConfig(PretrainedConfig):
    model_type = "sluice"

    def __init__(self, sluice=None, vocab_size=320, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, head_dim=32, rms_norm_eps=1e-5,
                 max_position_embeddings=256, tie_word_embeddings=True, use_cache=True, **kwargs):
        self.sluice = dict(sluice or {})
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rms_norm_eps = rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
