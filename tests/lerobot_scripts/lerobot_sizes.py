"""Run inside a LeRobot 0.6.1 venv: patches that make LeRobot's own π0 / π0.5 constructors build the sizes of
shallowpi's "shallowpi" config object instead of PaliGemma 3B (its size-less config cannot say them), forward
code untouched. Used by write_pi_folder.py --sizes and benchmarks/vs_lerobot.py."""

from unittest import mock


def sized_construction(variant: str, sizes: dict) -> list:
    """-> patches to start before `PI0Policy(cfg)` / `PI05Policy(cfg)` (or its from_pretrained) and stop after."""
    from lerobot.policies import pi_gemma

    module = __import__(f"lerobot.policies.{variant}.modeling_{variant}", fromlist=["x"])
    vocab, vis = sizes["vocab_size"], sizes["vision"]

    def gemma_config(name):
        return module.GemmaConfig(**sizes["vlm" if name == "gemma_2b" else "expert"])

    pali_init = pi_gemma.PaliGemmaForConditionalGenerationWithPiGemma.__init__
    expert_init = pi_gemma.PiGemmaForCausalLM.__init__

    def pali(self, config):
        config.text_config.vocab_size = vocab
        config._vocab_size = vocab
        config.image_token_index = vocab - 1  # unused by π (no image tokens in the text)
        v = config.vision_config
        v.image_size, v.patch_size = vis["image_size"], vis["patch_size"]
        v.hidden_size, v.num_hidden_layers = vis["width"], vis["depth"]
        v.intermediate_size, v.num_attention_heads = vis["mlp_dim"], vis["num_heads"]
        v.projection_dim = config.text_config.hidden_size
        config.text_config.num_image_tokens = (vis["image_size"] // vis["patch_size"]) ** 2
        pali_init(self, config)

    def expert(self, config, **kw):
        config.vocab_size = vocab
        expert_init(self, config, **kw)

    return [
        mock.patch.object(module, "get_gemma_config", gemma_config),
        mock.patch.object(pi_gemma.PaliGemmaForConditionalGenerationWithPiGemma, "__init__", pali),
        mock.patch.object(pi_gemma.PiGemmaForCausalLM, "__init__", expert),
    ]
