"""A tiny llama-architecture GGUF whose weights are set by hand, so its answers are scripted.

The model has one transformer block. Its residual stream is a bag of named one-hot
features rather than learned directions:

* every token embeds as ``CONST + one feature``: its own identity dimension if some rule
  reads it as the current token, a trigger class if it is a trigger word (or the closing
  ``</tool_response>`` tag), else a shared ``MISC`` dimension. So every embedding has the
  same norm and the RMS norms become fixed rescalings.
* attention has two heads. Both look for the *most recent* trigger: a carrier token has a
  large key on the lowest-frequency RoPE pair, the query sits at a small phase offset, so
  the score ``cos(distance * theta + phi)`` falls by at least one nat per token of distance
  across the whole context. Head ``mode`` counts ``</tool_response>`` as a trigger (after a
  tool result the model answers instead of calling again); head ``topic`` ignores it, so
  the answer after a tool result can still depend on what the user asked. With no trigger
  in the context both heads average the ``DEFAULT`` value of every position.
* the SwiGLU FFN is a lookup table: one hidden unit per rule ``(current token, mode[,
  topic]) -> next token``, gated so that it only opens when every condition holds. The
  unit writes a one-hot "next token" feature that the output head turns into a logit of
  about 50; nothing else gets more than 5 (end of turn, the fallback when no rule fires).

Greedy decoding therefore follows the scripts below exactly, and so does the server's
default sampler: the runner-up token is 45 nats behind. Recency needs exact scores: the
server must run with ``--cache-type-k f32 --flash-attn off`` (f16 keys, or the CPU flash
attention path, round it away: beyond ~12k positions, triggers a few tokens apart swap).

The tokenizer is byte-level BPE (``gpt2`` with the ``qwen2`` pre-tokenizer): 256 byte
tokens make any text encodable, merges build only the trigger words (and ``\\n\\n``), and
the scripted output pieces are extra tokens that no merge produces, so they only appear
when the model emits them.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import gguf
import numpy as np

TEMPLATE_NAME = "Qwen-Qwen3-0.6B.jinja"
"""The chat template, read unmodified from llama.cpp's ``models/templates``."""

CONTEXT_LENGTH = 32768
"""Recency is calibrated for this many positions; use ``-c`` at most this."""

HEAD_DIM = 16
LOGIT = 50.0
FALLBACK_LOGIT = 5.0
GATE_SHARPNESS = 40.0
PHASE = 0.2
"""Query phase offset on the recency pair: keeps the score's slope >= sin(PHASE)."""
MAX_ANGLE = 1.4
"""Phase reached at the far end of the context: cos stays positive, above any non-trigger."""
SLOPE = 1.0
"""Minimum score drop per token of distance between two trigger tokens (nats)."""

EOS = "<|im_end|>"
CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", EOS)
# Qwen3's tokenizer marks these added tokens as not special: they are text the parsers read.
TAG_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
THINKING_START = "\n"
"""Last prompt token with thinking on: ``<|im_start|>assistant\\n``."""
NO_THINKING_START = "\n\n"
"""Last prompt token with thinking off: ``...<think>\\n\\n</think>\\n\\n``."""


class Mode(Enum):
    """What the latest trigger in the context asks for."""

    DEFAULT = "default"
    PLAIN = "plain"
    SEARCH = "search"
    TWO_CALLS = "two_calls"
    THINK = "think"
    LONG = "long"
    VERDICT_MET = "verdict_met"
    VERDICT_NOT_MET = "verdict_not_met"
    AFTER_TOOL = "after_tool"


TRIGGERS: dict[Mode, str] = {
    Mode.PLAIN: "gravel",
    Mode.SEARCH: "cars",
    Mode.TWO_CALLS: "everywhere",
    Mode.THINK: "ponder",
    Mode.LONG: "forever",
    Mode.VERDICT_MET: "giraffe",
    Mode.VERDICT_NOT_MET: "unicorn",
}
"""Trigger words (also capitalised, with or without a leading space). Chosen to be absent
from lookout's own system prompts and tool descriptions, which precede the user's words."""

TOPICS = (Mode.DEFAULT, *TRIGGERS)

_CALL_OPEN = '\n{"name": "'
_CALL_CLOSE = '"}}\n'

SCRIPTS: dict[Mode, tuple[str, ...]] = {
    Mode.DEFAULT: ("I", " have", " no", " script", " for", " that", "."),
    Mode.PLAIN: ("The", " driveway", " is", " clear", "."),
    Mode.SEARCH: (
        "<tool_call>",
        _CALL_OPEN,
        "search_objects",
        '", "arguments": {"label": "',
        "car",
        _CALL_CLOSE,
        "</tool_call>",
    ),
    # The second call is spelt with tokens of its own: the FFN sees only the current token
    # and the mode, so a repeated token would have to lead to two different next tokens.
    Mode.TWO_CALLS: (
        "<tool_call>",
        _CALL_OPEN,
        "get_live_context",
        '", "arguments": {"camera": "',
        "front_door",
        _CALL_CLOSE,
        "</tool_call>",
        '\n<tool_call>\n{"name": "get_live_context", ',
        '"arguments": {"camera": "back_yard"}}',
        "\n</tool_call>",
    ),
    # Starts from "\n" (thinking on); with thinking off the prompt already ends in
    # "</think>\n\n" and the same "\n\n" rule continues with the answer.
    Mode.THINK: (
        "<think>",
        "\nThe",
        " sensor",
        " log",
        " shows",
        " the",
        " door",
        " shut",
        " at",
        " noon",
        ".\n",
        "</think>",
        "\n\n",
        "The",
        " garage",
        " is",
        " closed",
        ".",
    ),
    # Keys in the order of lookout's verdict schema: llama.cpp's grammar enforces it.
    Mode.VERDICT_MET: (
        '{"condition_met": ',
        "true",
        ', "confidence": ',
        "0.9",
        ', "next_run_in": ',
        "5",
        ', "reasoning": "',
        "A",
        " tall",
        " spotted",
        " animal",
        " stands",
        " on",
        " the",
        " lawn",
        '.", "notification_message": "',
        "Giraffe alert",
        " in",
        " the garden",
        '."}',
    ),
    Mode.VERDICT_NOT_MET: (
        '{"condition_met": ',
        "false",
        ', "confidence": ',
        "0.8",
        ', "next_run_in": ',
        "120",
        ', "reasoning": "',
        "Only",
        " an",
        " empty",
        " lawn",
        '.", "notification_message": ""}',
    ),
}

LONG_FIRST = "Tick"
LONG_LOOP = (" tock", " tick")
"""Mode LONG: "Tick tock tick tock ..." until ``max_tokens`` or the context runs out."""

AFTER_TOOL_SCRIPTS: dict[Mode, tuple[str, ...]] = {
    Mode.SEARCH: ("I", " found", " 1", " car", "."),
    Mode.TWO_CALLS: ("Both", " cameras", " are", " quiet", "."),
}
AFTER_TOOL_GENERIC = ("The", " tool", " answered", ".")
"""After a tool result, for any other topic."""


def _text(tokens: Iterable[str]) -> str:
    return "".join(tokens)


def _strip_think(tokens: Sequence[str]) -> str:
    return _text(tokens[tokens.index("</think>") + 2 :])


PLAIN_ANSWER = _text(SCRIPTS[Mode.PLAIN])
DEFAULT_ANSWER = _text(SCRIPTS[Mode.DEFAULT])
THINK_REASONING = "The sensor log shows the door shut at noon.\n"
"""As llama.cpp returns it: the newline before ``</think>`` stays, as with real Qwen3."""
THINK_ANSWER = _strip_think(SCRIPTS[Mode.THINK])
SEARCH_CALL = ("search_objects", {"label": "car"})
TWO_CALLS = (
    ("get_live_context", {"camera": "front_door"}),
    ("get_live_context", {"camera": "back_yard"}),
)
AFTER_SEARCH_ANSWER = _text(AFTER_TOOL_SCRIPTS[Mode.SEARCH])
AFTER_TWO_CALLS_ANSWER = _text(AFTER_TOOL_SCRIPTS[Mode.TWO_CALLS])
AFTER_TOOL_ANSWER = _text(AFTER_TOOL_GENERIC)
VERDICT_MET = json.loads(_text(SCRIPTS[Mode.VERDICT_MET]))
VERDICT_NOT_MET = json.loads(_text(SCRIPTS[Mode.VERDICT_NOT_MET]))


# --- tokenizer ---------------------------------------------------------------------------


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest shift up."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [""] * 256
    extra = 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_CHARS = _byte_chars()


def encode_bytes(text: str) -> str:
    """``text`` in the byte-level alphabet the ``gpt2`` tokenizer stores tokens in."""
    return "".join(BYTE_CHARS[b] for b in text.encode())


def trigger_variants(word: str) -> tuple[str, ...]:
    """The spellings of a trigger that the pre-tokenizer keeps as one word."""
    cap = word.capitalize()
    return (word, " " + word, cap, " " + cap)


@dataclass(frozen=True)
class Rule:
    """One FFN unit: ``current`` under ``mode`` (and ``topic``, if set) -> ``target``."""

    current: str
    mode: Mode
    topic: Mode | None
    target: str


def _chain(mode: Mode, tokens: Sequence[str], topic: Mode | None = None) -> list[Rule]:
    """Rules that walk ``tokens`` from either prompt ending to the end of the turn."""
    rules = [Rule(start, mode, topic, tokens[0]) for start in (THINKING_START, NO_THINKING_START)]
    rules += [Rule(a, mode, topic, b) for a, b in itertools.pairwise(tokens)]
    rules.append(Rule(tokens[-1], mode, topic, EOS))
    return rules


def build_rules() -> list[Rule]:
    """Every rule of the FFN; raises if two rules could fire for one (token, mode, topic)."""
    rules: list[Rule] = []
    for mode, tokens in SCRIPTS.items():
        if mode is Mode.THINK:
            # "\n" opens the think block; "\n\n" (thinking off, or after </think>) answers.
            rules.append(Rule(THINKING_START, mode, None, tokens[0]))
            rules += [Rule(a, mode, None, b) for a, b in itertools.pairwise(tokens)]
            rules.append(Rule(tokens[-1], mode, None, EOS))
        else:
            rules += _chain(mode, tokens)
    rules += [Rule(s, Mode.LONG, None, LONG_FIRST) for s in (THINKING_START, NO_THINKING_START)]
    rules.append(Rule(LONG_FIRST, Mode.LONG, None, LONG_LOOP[0]))
    rules.append(Rule(LONG_LOOP[0], Mode.LONG, None, LONG_LOOP[1]))
    rules.append(Rule(LONG_LOOP[1], Mode.LONG, None, LONG_LOOP[0]))
    for topic in TOPICS:
        rules += _chain(Mode.AFTER_TOOL, AFTER_TOOL_SCRIPTS.get(topic, AFTER_TOOL_GENERIC), topic)
    _check_rules(rules)
    return rules


def _check_rules(rules: list[Rule]) -> None:
    seen: dict[tuple[str, Mode, Mode | None], str] = {}
    for rule in rules:
        key = (rule.current, rule.mode, rule.topic)
        if seen.setdefault(key, rule.target) != rule.target:
            raise ValueError(f"conflicting rules for {key}: {seen[key]!r} / {rule.target!r}")
    for current, mode, topic in seen:
        if topic is not None and (current, mode, None) in seen:
            raise ValueError(f"rule for {(current, mode)} both with and without a topic")


@dataclass
class Vocab:
    """Token texts (stored form), their types, the BPE merges and what each decodes to."""

    texts: list[str]
    types: list[int]
    merges: list[str]
    surfaces: list[str]
    """What each token decodes to; empty for the bytes that are no UTF-8 on their own."""

    @classmethod
    def build(cls, generated: Iterable[str]) -> Vocab:
        """Bytes, merged trigger words, scripted pieces, then the chat template's tags."""
        texts = list(BYTE_CHARS)
        surfaces = [chr(b) if b < 128 else "" for b in range(256)]
        types = [int(gguf.TokenType.NORMAL)] * 256
        merged = ["\n\n"] + [v for w in TRIGGERS.values() for v in trigger_variants(w)]
        special = CONTROL_TOKENS + TAG_TOKENS
        for surface in dict.fromkeys([*merged, *generated]):
            if surface not in special and surface not in surfaces:
                texts.append(encode_bytes(surface))
                surfaces.append(surface)
                types.append(int(gguf.TokenType.NORMAL))
        for surface in special:
            texts.append(surface)
            surfaces.append(surface)
            kind = (
                gguf.TokenType.CONTROL if surface in CONTROL_TOKENS else gguf.TokenType.USER_DEFINED
            )
            types.append(int(kind))
        return cls(texts, types, _merges(merged), surfaces)

    def id(self, surface: str) -> int:
        """The id of the token that decodes to ``surface``."""
        return self.surfaces.index(surface)


def _chain_merges(word: str) -> list[str]:
    """Merges that build ``word``: left to right, a leading space joined last."""
    stored = encode_bytes(word)
    head, core = (stored[0], stored[1:]) if word.startswith(" ") else ("", stored)
    merges = [f"{core[: end - 1]} {core[end - 1]}" for end in range(2, len(core) + 1)]
    return merges + ([f"{head} {core}"] if head else [])


def _merges(words: Sequence[str]) -> list[str]:
    """Merge chains, ordered so that each word's own chain wins inside that word.

    BPE applies the lowest-ranked merge first, so one word's chain can break another word
    ("ev" from "everywhere" inside "forever"). A word that comes out wrong moves to the
    front and the order is tried again; the chains here settle in a few rounds.
    """
    order = list(words)
    for _ in range(4 * len(order)):
        merges = list(dict.fromkeys(m for word in order for m in _chain_merges(word)))
        broken = [w for w in order if bpe(w, merges) != [encode_bytes(w)]]
        if not broken:
            return merges
        order.remove(broken[0])
        order.insert(0, broken[0])
    raise ValueError(f"no merge order tokenizes {broken} as single tokens")


def bpe(word: str, merges: Sequence[str]) -> list[str]:
    """llama.cpp's BPE on one pre-tokenized word: lowest rank first, then leftmost."""
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    symbols = list(encode_bytes(word))
    while True:
        heap = [
            (ranks[(a, b)], i)
            for i, (a, b) in enumerate(itertools.pairwise(symbols))
            if (a, b) in ranks
        ]
        if not heap:
            return symbols
        _, i = heapq.nsmallest(1, heap)[0]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]


# --- weights -----------------------------------------------------------------------------


class Layout:
    """Residual-stream dimensions, by name."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.names: dict[str, int] = {}
        self.add("const")
        self.add("misc")
        for rule in rules:
            self.add(("cur", rule.current))
        for mode in Mode:
            self.add(("trig", mode))
        for mode in Mode:
            self.add(("mode", mode))
        for topic in TOPICS:
            self.add(("topic", topic))
        for rule in rules:
            self.add(("out", rule.target))
        self.size = -(-len(self.names) // 32) * 32

    def add(self, name: object) -> None:
        """Give ``name`` the next free dimension (once)."""
        self.names.setdefault(str(name), len(self.names))

    def __getitem__(self, name: object) -> int:
        return self.names[str(name)]

    def __contains__(self, name: object) -> bool:
        return str(name) in self.names


@dataclass
class Weights:
    """Every tensor of the model, in numpy's (out, in) orientation."""

    tensors: dict[str, np.ndarray]
    n_embd: int
    n_ff: int
    freq_base: float


def _feature(surface: str, layout: Layout) -> str:
    for mode, word in TRIGGERS.items():
        if surface in trigger_variants(word):
            return str(("trig", mode))
    if surface == "</tool_response>":
        return str(("trig", Mode.AFTER_TOOL))
    if ("cur", surface) in layout:
        return str(("cur", surface))
    return "misc"


def _attention(layout: Layout, n_ctx: int) -> tuple[dict[str, np.ndarray], float]:
    """Two recency heads; returns their tensors and the RoPE base that sets the frequency."""
    d = layout.size
    theta = (MAX_ANGLE - PHASE) / n_ctx
    freq_base = theta ** (-HEAD_DIM / (HEAD_DIM - 2))  # the last pair turns at base^(-14/16)
    # score = A * B / sqrt(HEAD_DIM) * cos(distance * theta + PHASE); its slope >= SLOPE
    product = SLOPE * math.sqrt(HEAD_DIM) / (theta * math.sin(PHASE))
    a = b = math.sqrt(product)
    wq = np.zeros((2 * HEAD_DIM, d), np.float32)
    wk = np.zeros((2 * HEAD_DIM, d), np.float32)
    wv = np.zeros((2 * HEAD_DIM, d), np.float32)
    wo = np.zeros((d, 2 * HEAD_DIM), np.float32)
    slots = {m: i for i, m in enumerate(Mode)}
    heads = (
        ("mode", list(Mode)[1:]),
        ("topic", [m for m in TOPICS if m is not Mode.DEFAULT]),
    )
    for h, (kind, carriers) in enumerate(heads):
        base = h * HEAD_DIM
        pair = base + HEAD_DIM - 2
        wq[pair, layout["const"]] = a * math.cos(PHASE)
        wq[pair + 1, layout["const"]] = a * math.sin(PHASE)
        wv[base + slots[Mode.DEFAULT], layout["const"]] = 1.0
        for mode in carriers:
            trig = layout[("trig", mode)]
            wk[pair, trig] = b
            wv[base + slots[mode], trig] = 1.0
            wv[base + slots[Mode.DEFAULT], trig] = -1.0
        for mode, slot in slots.items():
            if (kind, mode) in layout:
                wo[layout[(kind, mode)], base + slot] = 1.0
    tensors = {"attn_q": wq, "attn_k": wk, "attn_v": wv, "attn_output": wo}
    return tensors, freq_base


def _ffn(layout: Layout, rules: Sequence[Rule]) -> dict[str, np.ndarray]:
    """One gated unit per rule; it opens only when all its conditions hold."""
    d, n_ff = layout.size, -(-len(rules) // 32) * 32
    gate = np.zeros((n_ff, d), np.float32)
    up = np.zeros((n_ff, d), np.float32)
    down = np.zeros((d, n_ff), np.float32)
    for unit, rule in enumerate(rules):
        conditions = [("cur", rule.current), ("mode", rule.mode)]
        if rule.topic is not None:
            conditions.append(("topic", rule.topic))
        for name in conditions:
            gate[unit, layout[name]] = GATE_SHARPNESS
        gate[unit, layout["const"]] = -GATE_SHARPNESS * (len(conditions) - 0.5)
        up[unit, layout["const"]] = 1.0
        down[layout[("out", rule.target)], unit] = 2.0 / GATE_SHARPNESS  # silu(S/2) ~ S/2
    return {"ffn_gate": gate, "ffn_up": up, "ffn_down": down}


def build_weights(vocab: Vocab, rules: Sequence[Rule], n_ctx: int = CONTEXT_LENGTH) -> Weights:
    """All tensors; see the module docstring for what each part does."""
    layout = Layout(rules)
    d = layout.size
    embd = np.zeros((len(vocab.texts), d), np.float32)
    for token, surface in enumerate(vocab.surfaces):
        embd[token, layout["const"]] = 1.0
        embd[token, layout[_feature(surface, layout)]] = 1.0
    output = np.zeros((len(vocab.texts), d), np.float32)
    for rule in rules:
        output[vocab.id(rule.target), layout[("out", rule.target)]] = LOGIT
    output[vocab.id(EOS), layout["const"]] += FALLBACK_LOGIT
    attn, freq_base = _attention(layout, n_ctx)
    ffn = _ffn(layout, rules)

    # RMS norm weights undo the normalisation for the norm each stage expects: the
    # embedding has two unit features, +mode +topic after attention, +next token after FFN.
    def norm(features: int) -> np.ndarray:
        return np.full(d, math.sqrt(features / d), np.float32)

    tensors = {
        "token_embd.weight": embd,
        "output_norm.weight": norm(5),
        "output.weight": output,
        "blk.0.attn_norm.weight": norm(2),
        "blk.0.ffn_norm.weight": norm(4),
    }
    tensors |= {f"blk.0.{name}.weight": value for name, value in (attn | ffn).items()}
    return Weights(tensors, d, ffn["ffn_gate"].shape[0], freq_base)


def image_embedding() -> np.ndarray:
    """The input embedding of a neutral position (``CONST + MISC``), for image patches."""
    layout = Layout(build_rules())
    vector = np.zeros(layout.size, np.float32)
    vector[[layout["const"], layout["misc"]]] = 1.0
    return vector


def _generated_tokens() -> list[str]:
    pieces = [t for tokens in SCRIPTS.values() for t in tokens]
    pieces += [LONG_FIRST, *LONG_LOOP, *AFTER_TOOL_GENERIC]
    pieces += [t for tokens in AFTER_TOOL_SCRIPTS.values() for t in tokens]
    return pieces


def write_model(path: Path | str, chat_template: str | None = None) -> None:
    """Write the scripted model to ``path`` (a ``.gguf`` file).

    Args:
        path: Where to write.
        chat_template: Jinja chat template; by default llama.cpp's own Qwen3 template from
            the unpacked llama.cpp source (see ``build.template``).
    """
    if chat_template is None:
        from tests.peers.llamacpp.build import template

        chat_template = template(TEMPLATE_NAME)
    rules = build_rules()
    vocab = Vocab.build(_generated_tokens())
    weights = build_weights(vocab, rules)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("lookout scripted tiny")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(weights.n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(weights.n_ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(weights.freq_base)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(vocab.texts))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.texts)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.id("<|endoftext|>"))
    writer.add_eos_token_id(vocab.id(EOS))
    writer.add_pad_token_id(vocab.id("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)
    for name, tensor in weights.tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
