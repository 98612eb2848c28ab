#!/usr/bin/env python3
"""Golden ids for the GPT-NeoX byte-level BPE (tests/data/bpe/).

  python3 tools/bpe_golden.py inputs   # here: writes tests/data/bpe/inputs.jsonl (deterministic, seeded)
  python3 tools/bpe_golden.py golden   # on a machine with `tokenizers`: writes tests/data/bpe/golden.jsonl

The inputs mix lines of the shipped corpora (Shakespeare, SST-2, this repository's C++ and YAML) with generated
strings aimed at the tokenizer's corners: unicode in many scripts, combining marks (NFC), emoji, whitespace runs
(the added space-run tokens), tabs and newlines, numbers, contractions, punctuation runs, special tokens in text.
"""
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "data", "bpe")
TOKENIZER = os.path.join(ROOT, "data", "tokenizers", "gpt-neox-20b", "tokenizer.json")


def corpus_lines(path, n, rng, min_len=1):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [l.rstrip("\n") for l in f if len(l.strip()) >= min_len]
    return rng.sample(lines, min(n, len(lines)))


def generated(rng):
    out = []
    scripts = [
        "naïve café résumé façade jalapeño Ångström",
        "Straße größer Öl Übermaß",
        "Москва — столица России. Привет, мир!",
        "Ελληνικά: αβγδ ΑΒΓΔ",
        "日本語のテキスト、漢字とひらがな。東京タワー",
        "中文文本：你好，世界！我们在训练模型。",
        "한국어 문장입니다. 안녕하세요",
        "العربية: مرحبا بالعالم",
        "עברית: שלום עולם",
        "हिन्दी: नमस्ते दुनिया",
        "ไทย: สวัสดีชาวโลก",
        "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
        "math ∑∫∂√∞ ≤ ≥ ≠ ± × ÷ → ⇒ ∀x∃y",
        "zero\u200bwidth\u200cjoiner\u200d and\u00a0nbsp\u2009thin\u3000ideographic",
        "combining e\u0301 a\u0300 o\u0308 n\u0303 (NFC composes these)",
        "precomposed \u00e9 \u00e0 \u00f6 \u00f1 vs decomposed e\u0301 a\u0300 o\u0308 n\u0303",
        "Hangul jamo \u1100\u1161\u11a8 composes to \uac01",
        "ﬁ ligature ﬀ ① ² ½ Ⅻ (NFC keeps compatibility characters)",
        "\ufeffBOM at start",
        "replacement \ufffd char and private use \ue000",
        "surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 𐍈",
    ]
    out += scripts
    # Whitespace runs of every length 1..40 between words, and alone; tabs; newlines; mixed.
    for n in range(1, 41):
        out.append("a" + " " * n + "b")
        out.append(" " * n)
        out.append(" " * n + "lead")
        out.append("trail" + " " * n)
    for n in range(1, 9):
        out.append("x" + "\t" * n + "y")
        out.append("p" + "\n" * n + "q")
        out.append("line one\n" + " " * n + "indented")
    out += ["\r\n", "windows\r\nline", " \t \n \r ", "\u00a0\u00a0x", "   \n\n   ", "\n", "\t", " "]
    # Numbers.
    for _ in range(60):
        k = rng.randint(1, 25)
        out.append("".join(rng.choice("0123456789") for _ in range(k)))
    out += ["3.14159", "1,000,000", "-42", "+7e-10", "0x1F2E", "2026-12-01", "12:34:56", "v1.2.3", "$9.99", "50%",
            "١٢٣ Arabic-Indic digits", "٣.١٤", "२०२६", "①②③"]
    # Contractions and case.
    out += ["I'm", "you're", "we've", "they'll", "he'd", "it's", "don't", "I'M", "YOU'RE", "It'S", "rock 'n' roll",
            "'s", "'t", "''", "'''", "o'clock", "Ma'am", "y'all'd've", "`quoted'", "\u2019s curly", "l'été"]
    # Punctuation and symbol runs.
    out += ["!!!", "???", "...", "?!?!", "---", "===", "#include <vector>", "a->b", "x::y", "i++", "&&||", "<<=>>=",
            "@user #hashtag", "https://example.com/path?q=1&r=2#frag", "user@example.org", "C:\\Windows\\path",
            "~/dir/file.txt", "[1, 2, 3]", "{\"key\": \"value\"}", "<html><body>hi</body></html>", "**bold** _it_",
            "$$E = mc^2$$", "\\frac{a}{b}", "....!!!!????"]
    # Special tokens inside text.
    out += ["<|endoftext|>", "hello<|endoftext|>world", "a <|endoftext|> b", "<|padding|>", "x<|padding|>y",
            "<|endoftext|><|endoftext|>", "<|endoftext", "|endoftext|>", "< |endoftext| >",
            # The file's other special tokens (ids 50277-50280) are split out of any text, words included.
            "<|im_start|>user\nhello<|im_end|>", "the assistant said", "assistants", "Assistant", "ASSISTANT",
            "RWKV and Mamba", "xRWKVx", "assistant", "<|im_start|><|im_end|>"]
    # Code.
    out += ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
            "    if x:\n        y = 1\n    else:\n        y = 2", "SELECT * FROM t WHERE a = 'b';",
            "int main(int argc, char** argv) { return 0; }", "lambda x: x**2 + 3*x - 1"]
    # Random byte-ish soups from a wide code point pool.
    pool = [chr(c) for c in list(range(0x20, 0x7f)) + list(range(0xa0, 0x250)) + list(range(0x370, 0x3ff)) +
            list(range(0x400, 0x4ff)) + list(range(0x3040, 0x30ff)) + list(range(0x4e00, 0x4e80)) +
            list(range(0x1f600, 0x1f650)) + [0x300, 0x301, 0x308, 0x303, 0x327]] + [" ", " ", " ", "\t", "\n"]
    for _ in range(400):
        k = rng.randint(1, 60)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def make_inputs():
    rng = random.Random(20261201)
    lines = []
    lines += corpus_lines(os.path.join(ROOT, "data", "corpora", "tinyshakespeare.txt"), 1200, rng)
    sst = corpus_lines(os.path.join(ROOT, "data", "corpora", "sst2", "train.tsv"), 800, rng, 3)
    lines += [l.split("\t", 1)[-1] for l in sst]
    code = []
    for d in ["core", "autograd", "nn", "train", "data", "configs"]:
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            p = os.path.join(ROOT, d, name)
            if os.path.isfile(p) and name.endswith((".h", ".cpp", ".yaml")):
                with open(p, encoding="utf-8") as f:
                    code += [l.rstrip("\n") for l in f if l.strip()]
    lines += rng.sample(code, 600)
    # Multi-line paragraphs: several Shakespeare lines joined, keeping the newlines.
    with open(os.path.join(ROOT, "data", "corpora", "tinyshakespeare.txt"), encoding="utf-8") as f:
        text = f.read()
    for _ in range(100):
        start = rng.randrange(0, len(text) - 600)
        lines.append(text[start:start + rng.randint(50, 600)])
    lines += generated(rng)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "inputs.jsonl"), "w", encoding="utf-8") as f:
        for l in lines:
            f.write(json.dumps({"text": l}, ensure_ascii=True) + "\n")
    print(f"wrote {len(lines)} inputs")


def make_golden():
    from tokenizers import Tokenizer  # the HuggingFace reference implementation
    import tokenizers
    tok = Tokenizer.from_file(TOKENIZER)
    n = 0
    with open(os.path.join(OUT_DIR, "inputs.jsonl"), encoding="utf-8") as fin, \
         open(os.path.join(OUT_DIR, "golden.jsonl"), "w", encoding="utf-8") as fout:
        for line in fin:
            text = json.loads(line)["text"]
            ids = tok.encode(text).ids
            dec = tok.decode(ids, skip_special_tokens=False)
            fout.write(json.dumps({"text": text, "ids": ids, "decoded": dec}, ensure_ascii=True) + "\n")
            n += 1
    print(f"tokenizers {tokenizers.__version__}: wrote {n} golden encodings")


if __name__ == "__main__":
    {"inputs": make_inputs, "golden": make_golden}[sys.argv[1]]()
