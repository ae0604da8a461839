"""Chat template tests: render_chat against transformers' apply_chat_template on the same templates."""

from __future__ import annotations

import warnings
from datetime import datetime

import pytest

from llm.vocab import (
    CHATML_TEMPLATE,
    LLAMA3_TEMPLATE,
    ZEPHYR_TEMPLATE,
    bpe_vocab_kv,
    spm_vocab_kv,
    vocab_only_gguf,
    write_tokenizer_json,
)
from tensorlogic.errors import TensorLogicError, UnsupportedError
from tensorlogic.llm.chat import ChatTemplateError, apply_chat_template, render_chat
from tensorlogic.llm.tokenizer import Tokenizer, load_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": 'And <b>3+3</b> & "quotes"?'},
    ],
    [{"role": "user", "content": "  padded\n\n  "}, {"role": "assistant", "content": "\tok\n"}],
    [{"role": "user", "content": "東京 안녕하세요 🙂 café"}],
    [{"role": "user", "content": ""}],
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(our tokenizer, transformers' tokenizer) read from GGUF files with each fixture template."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("chat")
    kvs = {
        "zephyr": spm_vocab_kv(n_vocab=2000),
        "llama3": bpe_vocab_kv(1024, "llama-bpe"),
        "chatml": bpe_vocab_kv(1024, "qwen2"),
    }
    out = {}
    for name, kv in kvs.items():
        path = vocab_only_gguf(root / f"{name}.gguf", kv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoTokenizer.from_pretrained(str(root), gguf_file=path.name)
        out[name] = (load_tokenizer(path), hf, kv)
    return out


@pytest.mark.parametrize("name", ["zephyr", "llama3", "chatml"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_templates_match_transformers(models, name, generation_prompt):
    ours, hf, _ = models[name]
    for messages in CONVERSATIONS:
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        assert apply_chat_template(ours, messages, add_generation_prompt=generation_prompt) == expected
        bos = hf.bos_token or ""
        eos = hf.eos_token or ""
        rendered = render_chat(
            ours.chat_template, messages, add_generation_prompt=generation_prompt, bos_token=bos, eos_token=eos
        )
        assert rendered == expected


def test_templates_come_from_metadata(models):
    assert models["zephyr"][0].chat_template == ZEPHYR_TEMPLATE
    assert models["llama3"][0].chat_template == LLAMA3_TEMPLATE
    assert models["chatml"][0].chat_template == CHATML_TEMPLATE


def test_template_from_tokenizer_config_beside_tokenizer_json(tmp_path, models):
    kv = models["chatml"][2]
    tok = Tokenizer.from_json(write_tokenizer_json(tmp_path / "tokenizer.json", kv))
    assert tok.chat_template == CHATML_TEMPLATE
    messages = CONVERSATIONS[1]
    assert apply_chat_template(tok, messages) == models["chatml"][1].apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


HF_FEATURES = [
    # tojson keeps non-ASCII and does not HTML-escape; indent and sort_keys pass through.
    "{% for m in messages %}{{ m | tojson }}\n{{ m | tojson(indent=2, sort_keys=True) }}{% endfor %}",
    # trim_blocks and lstrip_blocks.
    "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n",
    # loop controls, namespaces, extra variables, tools defaulting to none.
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}{{ m.role[0] }}{% endfor %}{{ ns.n }}|{{ custom_flag }}|{{ tools is none }}",
    # generation blocks render their body.
    "{% for m in messages %}{% generation %}<{{ m.content }}>{% endgeneration %}{% endfor %}",
]


@pytest.mark.parametrize("template", HF_FEATURES)
def test_jinja_features_match_transformers(models, template):
    _, hf, _ = models["chatml"]
    for messages in CONVERSATIONS:
        expected = hf.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True, custom_flag="yes"
        )
        ours = render_chat(
            template,
            messages,
            add_generation_prompt=True,
            bos_token=hf.bos_token,
            eos_token=hf.eos_token,
            custom_flag="yes",
        )
        assert ours == expected


def test_strftime_now():
    fmt = "%d %b %Y"
    before = datetime.now().strftime(fmt)
    text = render_chat("{{ strftime_now('%d %b %Y') }}", [])
    assert text in (before, datetime.now().strftime(fmt))


def test_raise_exception_is_one_line_naming_the_line(models):
    template = "{% for m in messages %}\n{% if m.role == 'tool' %}\n{{ raise_exception('tools are not supported') }}"
    template += "\n{% endif %}{% endfor %}"
    messages = [{"role": "tool", "content": "x"}]
    import jinja2

    with pytest.raises(jinja2.exceptions.TemplateError, match="tools are not supported"):
        models["chatml"][1].apply_chat_template(messages, chat_template=template, tokenize=False)
    with pytest.raises(ChatTemplateError) as e:
        render_chat(template, messages)
    text = str(e.value)
    assert "\n" not in text
    assert "line 3" in text and "tools are not supported" in text
    assert isinstance(e.value, TensorLogicError)


@pytest.mark.parametrize(
    "template, expect",
    [
        ("{% for m in messages %}\n{{ m.content }\n{% endfor %}", "chat template line 2"),
        ("{% if x %}never closed", "chat template line 1"),
        ("ok\n\n{{ messages[0].content + 1 }}", "line 3"),
        ("{{ messages.append(1) }}", "chat template"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "chat template"),
    ],
)
def test_template_errors_are_one_line(template, expect):
    with pytest.raises(ChatTemplateError) as e:
        render_chat(template, [{"role": "user", "content": "hi"}])
    text = str(e.value)
    assert "\n" not in text and expect in text


@pytest.mark.parametrize(
    "messages, expect",
    [
        ("hello", "messages must be a list of dicts, not str"),
        ({"role": "user", "content": "hi"}, "messages must be a list of dicts, not dict"),
        (["hi"], "messages[0] must be a dict with 'role' and 'content', not str"),
        ([{"content": "hi"}], "messages[0] has no 'role'"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], "messages[1] has no 'content'"),
        ([{"role": "user", "content": 3}], "messages[0]['content'] must be a string, not int"),
        ([{"role": None, "content": "x"}], "messages[0]['role'] must be a string, not NoneType"),
    ],
)
def test_bad_messages(messages, expect):
    with pytest.raises(ChatTemplateError) as e:
        render_chat(CHATML_TEMPLATE, messages)
    assert str(e.value) == expect


def test_template_must_be_a_string():
    with pytest.raises(ChatTemplateError, match="must be a string, not NoneType"):
        render_chat(None, [])


def test_tokenizer_without_template(models):
    kv = {k: v for k, v in models["chatml"][2].items() if k != "tokenizer.chat_template"}
    tok = Tokenizer.from_gguf(kv, "plain.gguf")
    assert tok.chat_template is None
    with pytest.raises(UnsupportedError, match="no chat template"):
        apply_chat_template(tok, CONVERSATIONS[0])


def test_rendered_prompt_encodes_like_transformers(models):
    """The prompt ids a chat produces: the template writes BOS itself, so no second BOS is added."""
    ours, hf, _ = models["llama3"]
    messages = CONVERSATIONS[1]
    text = apply_chat_template(ours, messages)
    expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(expected, dict) or hasattr(expected, "input_ids"):
        expected = expected["input_ids"]
    assert ours.encode(text, add_bos=False) == list(expected)
