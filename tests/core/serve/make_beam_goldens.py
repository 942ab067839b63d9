#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Beam-search goldens: Hugging Face transformers' generate(inputs_embeds=..., num_beams=3,
repetition_penalty=1.2, do_sample=False), as MiniCPM-o's chat(sampling=False) calls it, on the tiny
Qwen2 of tests/data/model/qwen2_tiny.safetensors, for tests/core/serve/beam_search_test.cpp.

The tiny vocabulary (256 ids) never produces the real stop ids (151645, 151643), so besides the
chat() stops some cases stop on a token the beams do produce (one of the first tokens of the
chat() case's answer), which makes hypotheses finish early; other cases vary num_beams,
repetition_penalty, length_penalty and early_stopping (True, False = HF's default, "never").

Run where transformers is installed (the GPU host; the model runs on the CPU):
  python3 make_beam_goldens.py --weights tests/data/model/qwen2_tiny.safetensors \
      --out tests/data/model/qwen2_tiny_beam.json [--sources beam_search_source.py]
"""
import argparse
import inspect
import json

import torch
from safetensors import safe_open

CHAT_STOPS = [151645, 151643]  # <|im_end|>, <|endoftext|>


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sources", help="also write the source of transformers' beam search here (for review)")
    args = ap.parse_args()
    import transformers
    from transformers import GenerationMixin, Qwen2Config, Qwen2ForCausalLM
    from transformers.generation.logits_process import LogitsProcessorList

    with safe_open(args.weights, "pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {k[len("llm."):]: f.get_tensor(k) for k in f.keys() if k.startswith("llm.")}
        ids = f.get_tensor("golden.input_ids")
    model = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="eager")).float().eval()
    model.load_state_dict(state, strict=True)

    # Which logits processors beam search runs (expected: the repetition penalty alone).
    processors = set()
    call = LogitsProcessorList.__call__

    def spy(self, input_ids, scores, **kwargs):
        processors.add(tuple(type(p).__name__ for p in self))
        return call(self, input_ids, scores, **kwargs)

    LogitsProcessorList.__call__ = spy

    def generate(prompt, num_beams, repetition_penalty, eos, max_new_tokens, early_stopping=False, length_penalty=1.0):
        with torch.no_grad():
            embeds = model.get_input_embeddings()(prompt.unsqueeze(0))
            out = model.generate(inputs_embeds=embeds, attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                                 do_sample=False, num_beams=num_beams, repetition_penalty=repetition_penalty,
                                 eos_token_id=eos, pad_token_id=0, max_new_tokens=max_new_tokens,
                                 length_penalty=length_penalty, early_stopping=early_stopping,
                                 num_return_sequences=1, return_dict_in_generate=True, output_scores=True)
        # From inputs_embeds, generate() returns the new tokens only.
        tokens = out.sequences[0].tolist()
        return {"prompt": prompt.tolist(), "num_beams": num_beams, "repetition_penalty": repetition_penalty,
                "eos": eos, "max_new_tokens": max_new_tokens, "early_stopping": early_stopping,
                "length_penalty": length_penalty, "tokens": tokens, "score": float(out.sequences_scores[0]),
                "stopped_by_eos": bool(tokens) and tokens[-1] in eos}

    def beam(*args):
        # One failing case (an unexpected transformers behaviour) is recorded, not fatal.
        try:
            return generate(*args)
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e), "tokens": []}

    prompts = {"row0": ids[0], "row1": ids[1], "row1_first5": ids[1, :5]}
    cases = []
    for name, prompt in prompts.items():
        chat = beam(prompt, 3, 1.2, CHAT_STOPS, 16)
        cases.append({"name": f"{name}.chat", **chat})
        cases.append({"name": f"{name}.chat_4_tokens", **beam(prompt, 3, 1.2, CHAT_STOPS, 4)})
        first = chat["tokens"] or [1, 2, 3, 4]
        cases.append({"name": f"{name}.eos_third", **beam(prompt, 3, 1.2, [first[2]], 12)})
        cases.append({"name": f"{name}.eos_second_or_chat", **beam(prompt, 3, 1.2, [first[1], CHAT_STOPS[0]], 12)})
        cases.append({"name": f"{name}.early_stopping_true", **beam(prompt, 3, 1.2, [first[2]], 12, True)})
        cases.append({"name": f"{name}.early_stopping_never", **beam(prompt, 3, 1.2, [first[2]], 12, "never")})
        cases.append({"name": f"{name}.length_penalty_2", **beam(prompt, 2, 1.2, [first[3]], 10, False, 2.0)})
        cases.append({"name": f"{name}.four_beams_no_penalty", **beam(prompt, 4, 1.0, CHAT_STOPS, 10)})
    with open(args.out, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "generator": "tests/core/serve/make_beam_goldens.py",
                   "processors": sorted(list(p) for p in processors), "cases": cases}, f, indent=1)
        f.write("\n")
    for c in cases:
        print(f"{c['name']:>32}: {c['tokens']} score {c.get('score')} eos-stopped {c.get('stopped_by_eos')} "
              f"{c.get('error', '')}")
    print(f"processors: {processors}; transformers {transformers.__version__}, torch {torch.__version__}")

    if args.sources:
        from transformers.generation import logits_process, stopping_criteria
        names = ["_beam_search", "_get_top_k_continuations", "_get_running_beams_for_next_iteration",
                 "_update_finished_beams", "_check_early_stop_heuristic", "_beam_search_has_unfinished_sequences",
                 "_prepare_generated_length", "_get_logits_processor"]
        parts = [getattr(GenerationMixin, n, None) for n in names]
        parts += [logits_process.RepetitionPenaltyLogitsProcessor, stopping_criteria.EosTokenCriteria,
                  stopping_criteria.MaxLengthCriteria]
        with open(args.sources, "w") as f:
            f.write(f"# from {inspect.getsourcefile(GenerationMixin)}\n")
            for name, part in zip(names + ["RepetitionPenalty", "EosTokenCriteria", "MaxLengthCriteria"], parts):
                try:
                    f.write(f"# ---- {name}\n{inspect.getsource(part)}\n")
                except (OSError, TypeError) as e:
                    f.write(f"# ---- {name}: no source ({e})\n")
            f.write(f"# ---- generation_config\n# {model.generation_config.to_dict()}\n")


if __name__ == "__main__":
    main()
