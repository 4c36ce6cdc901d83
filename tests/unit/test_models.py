import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1pipe.config import compose
from r1pipe.data.templates import build_prompt
from r1pipe.models import TAG_TOKENS, build_char_tokenizer, save_tiny_base


def test_char_tokenizer_roundtrip_one_token_per_char():
    tok = build_char_tokenizer()
    text = "12+34 = 46\n\tok"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    for tag in TAG_TOKENS:  # tags are whole tokens
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1


def test_tiny_model_saved_in_hf_format_loads_and_generates(tmp_path):
    cfg, _ = compose(["conf=smoke"])
    save_tiny_base(cfg.model, tmp_path, seed=0)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    # The reloaded tokenizer (transformers picks Qwen2's class) must tokenize like ours.
    s = "<think>\n7+8=15</think> <answer>15</answer>"
    assert tok(s)["input_ids"] == build_char_tokenizer()(s)["input_ids"]
    prompt = build_prompt("1+2=?", cfg.task, tok)
    assert prompt.startswith("<|im_start|>user\n1+2=?")
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_tiny_model_init_depends_on_seed(tmp_path):
    cfg, _ = compose(["conf=smoke"])
    a = save_tiny_base(cfg.model, tmp_path / "a", seed=0)
    b = save_tiny_base(cfg.model, tmp_path / "b", seed=1)
    ma = AutoModelForCausalLM.from_pretrained(a)
    mb = AutoModelForCausalLM.from_pretrained(b)
    pa, pb = next(ma.parameters()), next(mb.parameters())
    assert not torch.equal(pa, pb)
