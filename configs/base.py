"""Defaults shared by every run; other config files start from `get_config()` here and override.

Launch with `python launch.py --config=configs/<file>.py --workdir=<dir> [--config.a.b=value ...]`.
"""
import ml_collections
from ml_collections import config_dict

from ilp import parallel


def training(**overrides) -> ml_collections.ConfigDict:
  """Knobs shared by the `pretrain` and `sft` stages (the same loop runs both)."""
  section = ml_collections.ConfigDict(dict(
      # Starting point: "model_init", "pretrain" (that stage's final model) or a checkpoint path.
      init_from="model_init",
      batch_size=16,              # global batch (sequences per optimizer step)
      grad_accum_steps=1,         # micro-batches per step (batch_size must divide evenly)
      compute_dtype="float32",    # "bfloat16" computes in bf16 with float32 master weights
      log_every_steps=10,
      peak_flops=0.0,             # peak FLOP/s of all devices for MFU; 0 = time a float32 matmul
      optimizer=dict(learning_rate=1e-4, warmup_steps=-1, warmup_ratio=0.03, decay="cosine", end_lr_ratio=0.1,
                     b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0),
      checkpoint=dict(every_steps=200, max_to_keep=2, async_save=True),
  ))
  section.update(overrides)
  return section


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Pipeline stages to run, in order; a stage whose outputs exist is skipped.
  c.stages = ("init_model",)

  # Architecture, used when no HF checkpoint is given (fields of ilp.model.config.ModelConfig).
  c.model = ml_collections.ConfigDict(dict(
      family="llama", vocab_size=256, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4,
      num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=512, tie_embeddings=False,
      qkv_bias=False, o_bias=False, param_dtype="float32", dtype="float32",
      bos_token_id=config_dict.placeholder(int), eos_token_ids=(), pad_token_id=config_dict.placeholder(int),
      rope=dict(theta=10000.0, type="default", factor=1.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192)))

  # Where the initial model comes from: a local HF directory (config.json + safetensors), or
  # random initialisation from `model` when empty.
  c.init = ml_collections.ConfigDict(dict(hf_dir="", param_dtype="float32", dtype="float32"))

  # Training data. Each source is a dict: path, format (jsonl/json/parquet/hf/tfds/text; default
  # from the extension), dataset (default: file stem), stage (default 1), fields (column mapping),
  # split and name (for hf/tfds). Corpora for pre-training take the same keys plus `weight`.
  c.data = ml_collections.ConfigDict(dict(
      sft=(), corpora=(),
      tokenizer="",               # HF tokenizer directory; default: the one stored with the initial model
      buckets=(64, 128, 256),     # padded sequence lengths; the largest is the maximum length
      overlong="truncate_prompt",  # or "drop": what to do with an example longer than the largest bucket
      template=dict(use_chat_template=True, turn="{role}: {content}\n", generation_prefix="assistant: ",
                    add_bos=True),
  ))

  # Supervised fine-tuning. `stages` lists dicts {name, epochs, datasets and/or data_stage} for
  # sequential SFT (records of those data sets / with that `stage` field); when empty, records are
  # staged by their own `stage` field, each stage running `epochs` epochs.
  c.sft = training(epochs=2, stages=(), eval_every_steps=0)

  # Continual pre-training on data.corpora (mixed by their `weight`), LM loss on every token.
  c.pretrain = training(steps=1000, seq_length=128)

  # Detection (paper §2–3): re-evaluate the fine-tuned model on its own training set. Decoding
  # settings are not given by the paper; these defaults are ours (README, "Detection").
  c.detect = ml_collections.ConfigDict(dict(
      model="sft",                 # "sft" (that stage's final model) or a checkpoint path
      base="model_init",           # base model for the probes: "model_init", "pretrain", a path, or "" for none
      num_samples=5, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=64,
      repeats=2,                   # sampling runs with different seeds, for Cohen's kappa of the labels
      repeat_temperatures=(),      # per-run temperatures (default: all at `temperature`)
      threshold=0.2,               # unlearned: pass@N < threshold (paper: 0.2 with N = 5)
      pass_k=(1, 5), bon_k=(1, 3, 5),
      verifier="exact_match", verifier_threshold=0.5,
      dataset_verifiers=(),        # ((dataset, verifier name), ...) overriding `verifier`
      base_samples=5,              # samples per prompt from the base model (0: greedy only)
      batch_size=16, chunk_size=512, top_candidates=1000,
      mc=dict(enabled=True, num_options=4, distractors="random", include_base_answer=True,
              p_exist=0.8,         # knowledge exists: base P(true option) > p_exist (paper: 0.8)
              t_conf=0.5),         # high-confidence error: base P(a wrong option) > t_conf (paper: not given)
  ))

  # Diagnosis (paper §3–4): per-example signals and the ordered cause rules. The paper gives
  # JSD 0.3 and the blind-fact pass rate 0.2; every other value is ours (README, "Diagnosis").
  c.diagnose = ml_collections.ConfigDict(dict(
      signals=dict(similarity_threshold=0.5,  # TF-IDF cosine of near-duplicate prompts (paper's X: not given)
                   ngram=1, max_df=100,       # word n-grams; n-grams in more prompts propose no candidate pairs
                   template_min_df=3,         # rarer words are masked to form a prompt's template
                   same_answer_kind=True,     # near-duplicates expect the same kind of answer (templates sharing answers)
                   slope_passes=3),           # final evaluation passes over which improvement is measured
      rules=dict(order=("III", "IV", "II", "I", "V"),  # first cause whose rule holds wins
                 jsd=0.3, blind_pass=0.2, prerequisites_known=0.5, forgetting_drop=0.25, oscillation=0.3,
                 improvement=0.05, rare_template_share=0.05, long_response_ratio=2.0),
      corpus_evidence=True,       # check answers against data.corpora, the pre-training text (paper §6)
      typical_examples=3,         # examples per cause shown in the report
  ))

  # Device mesh (data, fsdp, tensor); one entry may be -1 (= the remaining devices).
  c.mesh = ml_collections.ConfigDict(dict(shape=(1, -1, 1), rules=parallel.DEFAULT_RULES))

  # Multi-host runtime (TPU pods, GPU clusters). Unset fields are auto-detected by JAX.
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address=config_dict.placeholder(str),
      num_processes=config_dict.placeholder(int), process_id=config_dict.placeholder(int)))
  return c
