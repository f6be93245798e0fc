"""The detection and attribution tables' column names, each with its one-line meaning.

Detection and diagnosis write every column under these names, and diagnosis, the report and the
scripts read them back through the same, so a column is renamed or added here, once. `meaning`
answers for any column of either table and raises for one this module does not name (the tests
hold both tables to it). It imports no other ilp module, so diagnosis reads it without detection's models.
"""

from __future__ import annotations

import re

MULTIPLE_CHOICE = "multiple_choice"  # the paper's protocol: N predictions from the K-option distribution
GENERATIVE = "generative"  # ours: N generations, each checked by a verifier
PROTOCOLS = (MULTIPLE_CHOICE, GENERATIVE)
PREFIX = {MULTIPLE_CHOICE: "mc_", GENERATIVE: "gen_"}  # column prefix of each protocol's numbers
BASE = "base_"  # prefix of the base model's samples' numbers (named as a protocol's)
SOURCES = ("record", "base", "pool")  # where MC wrong options come from: meta.distractors, the base model,
# other examples

_NAMED: dict[str, str] = {}  # column -> meaning
_SUFFIXES: dict[str, str] = {}  # name after a prefix (PREFIX, BASE) -> meaning


def _column(name: str, meaning: str) -> str:
  _NAMED[name] = meaning
  return name


def _suffix(name: str, meaning: str) -> str:
  _SUFFIXES[name] = meaning
  return name


def of(protocol: str, name: str) -> str:
  """`protocol`'s column `name` (a suffix below), e.g. of("generative", PASS_AT_N) = "gen_pass_at_n"."""
  return PREFIX[protocol] + name


def pass_at(k: int | str) -> str:
  return f"pass_at_{k}"


def bon_at(k: int | str) -> str:
  return f"bon_at_{k}"


def options_from(source: str) -> str:
  return f"mc_options_from_{source}"


def score(cause: str) -> str:
  return f"score_{cause}"


# The example (from the examples table).
ID = _column("id", "the example's stable id")
DATASET = _column("dataset", "the data set it comes from")
PHASE = _column("phase", "the record's SFT phase")
META = _column("meta", "the record's metadata (JSON)")
REFERENCE = _column("reference", "the response trained on (the target)")
PROMPT = _column("prompt", "the prompt turns' text (attribution table)")
EXAMPLE = (ID, DATASET, PHASE, META, REFERENCE)

# One sampling run's numbers, after a protocol's prefix or BASE.
N = _suffix("n", "samples per example in the first run")
TRUNCATED = _suffix("truncated", "samples of the first run cut by the token budget")
MEAN_LOGPROB = _suffix("mean_logprob", "mean over the first run's samples of their mean token log-prob")
SAMPLES = _suffix("samples", "the first run's decoded samples")
GENERATIONS = (N, TRUNCATED, MEAN_LOGPROB, SAMPLES)
PASS_AT_N = _suffix("pass_at_n", "pass@N: the fraction of the first run's N samples or predictions that are correct")
CORRECT = _suffix("c", "correct samples or predictions in the first run")
BON = _suffix("bon", "best-of-N: the first run's most confident sample or prediction is correct (ties averaged)")
SCORES = (PASS_AT_N, CORRECT, BON)
PER_K = (
  _suffix(pass_at("<k>"), "unbiased pass@k from the first run's N samples"),
  _suffix(bon_at("<k>"), "best-of-k accuracy by confidence, expected over k-subsets of the first run"),
)

# A protocol's label, after its prefix.
UNLEARNED = _suffix("unlearned", "the unlearned label (detect.label: sampled or expected)")
UNLEARNED_RUNS = _suffix("unlearned_runs", "per run, pass@N < detect.threshold")
ERROR_CONSISTENCY = _suffix("error_consistency", "share of wrong samples or predictions over all runs")
EXPECTED_PASS = _suffix("expected_pass", "the model's own probability that one sample at detect.temperature passes")
UNLEARNED_SAMPLED = _suffix("unlearned_sampled", "the sampled label: the repeat rule over the runs' labels")
SEVERITY_RANK = _suffix("severity_rank", "1 = the most severe unlearned example, 0 for learned ones")
TOP_CANDIDATE = _suffix("top_candidate", "among the detect.top_candidates most severe unlearned examples")
LABEL = (UNLEARNED, UNLEARNED_RUNS, ERROR_CONSISTENCY, EXPECTED_PASS, UNLEARNED_SAMPLED, SEVERITY_RANK, TOP_CANDIDATE)
LABELLED = (UNLEARNED, PASS_AT_N, ERROR_CONSISTENCY, SEVERITY_RANK, TOP_CANDIDATE)  # diagnose.protocol's, unprefixed
# whose numbers each prefix marks, and the suffixes it takes
_PREFIXED = {
  PREFIX[MULTIPLE_CHOICE]: (MULTIPLE_CHOICE, SCORES + PER_K + LABEL),
  PREFIX[GENERATIVE]: (GENERATIVE, GENERATIONS + SCORES + PER_K + LABEL),
  BASE: ("the base model's samples", GENERATIONS + SCORES),
}

# The probed model's greedy answer (generative protocol).
GREEDY_CORRECT = _column("greedy_correct", "the probed model's greedy answer passes the verifier")
GREEDY_TEXT = _column("greedy_text", "the probed model's greedy answer")

# Base-model probes.
PREREQUISITES = _column("prerequisites", "meta.prerequisites facts listed")
PREREQUISITES_KNOWN = _column("prerequisites_known", "share of them the base model is not blind on (NaN: none)")
BASE_GREEDY_CORRECT = _column("base_greedy_correct", "the base model's greedy answer passes the verifier")
BASE_GREEDY_TEXT = _column("base_greedy_text", "the base model's greedy answer")
BASE_PASS_AT_N = BASE + PASS_AT_N
BASE_BON_AT_BLIND_K = _column("base_bon_at_blind_k", "the base model's BoN-blind_bon_k accuracy (the blind rule's)")
BASE_BLIND = _column("base_blind", "blind fact: base pass rate < detect.threshold and BoN-blind_bon_k < blind_bon")
BASE_ENTITY_LIFT = _column("base_entity_lift", "nats the prompt's own entities add to the base model's answer tokens")
PROMPT_EMBEDDING = _column("prompt_embedding", "the probed model's last-token prompt state (embedding_dims wide)")
RESPONSE_EMBEDDING = _column(
  "response_embedding",
  "the probed model's mean state over the reference's tokens (embedding_dims wide)",
)

# The multiple-choice probe.
MC_OPTIONS = _column("mc_options", "the options; option 0 is the reference")
OPTIONS_FROM = tuple(_column(options_from(s), f"wrong options from the source '{s}'") for s in SOURCES)
MC_PROBS_SFT = _column("mc_probs_sft", "the probed model's option distribution")
SFT_MC_CORRECT = _column("sft_mc_correct", "the probed model's most probable option is the reference")
SFT_P_TRUE = _column("sft_p_true", "the probed model's probability of the reference option")
REFERENCE_MC_CORRECT = _column("reference_mc_correct", "the reference model's most probable option is the reference")
REFERENCE_P_TRUE = _column("reference_p_true", "the reference model's probability of the reference option")
MC_PROBS_BASE = _column("mc_probs_base", "the base model's option distribution")
BASE_MC_CORRECT = _column("base_mc_correct", "the base model's most probable option is the reference")
BASE_P_TRUE = _column("base_p_true", "the base model's probability of the reference option")
BASE_MC_ACCURACY = _column("base_mc_accuracy", "the base model's accuracy over N predictions")
P_EXIST = _column("p_exist", "knowledge exists: base_mc_accuracy > mc.p_exist")
BASE_CONF_WRONG = _column("base_conf_wrong", "the base model's highest probability of a wrong option")
BASE_HIGH_CONF_ERROR = _column("base_high_conf_error", "the base model prefers a wrong option with P > mc.t_conf")
BASE_BELIEF = _column("base_belief", "the base model's most probable wrong option")
JSD_BASE_SFT = _column("jsd_base_sft", "JSD(base || probed) over the options, in bits")
SFT_P_BASE_BELIEF = _column("sft_p_base_belief", "the probed model's probability of base_belief")

# Diagnosis: training dynamics (`ilp.diagnosis.signals.dynamics_signals`).
OWN_PHASE = _column("own_phase", "the last training phase that used the example")
FINAL_PHASE = _column("final_phase", "SFT's last training phase")
INITIAL_LOSS = _column("initial_loss", "response loss at the start (the base model)")
INITIAL_GOLD_PROB = _column("initial_gold_prob", "mean gold-token probability at the start")
INITIAL_MARGIN = _column("initial_margin", "mean gold-logit margin at the start")
OWN_END_GOLD_PROB = _column("own_end_gold_prob", "mean gold-token probability at the end of its own phase")
OWN_END_EXACT_MATCH = _column("own_end_exact_match", "every response token the argmax at the end of its own phase")
OWN_END_MARGIN = _column("own_end_margin", "mean gold-logit margin at the end of its own phase")
FINAL_LOSS = _column("final_loss", "response loss at the last evaluation")
FINAL_GOLD_PROB = _column("final_gold_prob", "mean gold-token probability at the last evaluation")
FINAL_EXACT_MATCH = _column("final_exact_match", "every response token the argmax at the last evaluation")
FINAL_RESPONSE_PROB = _column("final_response_prob", "probability of the whole response at the last evaluation")
PEAK_OWN_RESPONSE_PROB = _column("peak_own_response_prob", "the whole response's best probability in its own phase")
BOUNDARY_DROP = _column("boundary_drop", "gold-token probability lost from its own phase's end to the end")
PEAK_DROP = _column("peak_drop", "relative loss of the response probability from its own-phase peak to the end")
LEARNED_THEN_LOST = _column("learned_then_lost", "exact match at its own phase's end, not at the end")
EVER_LEARNED = _column("ever_learned", "exact match at some evaluation after the start")
STEPS_TO_POSITIVE_MARGIN = _column("steps_to_positive_margin", "first step with a positive mean margin (NaN: never)")
MARGIN_CLOSING_RATE = _column("margin_closing_rate", "margin gained per evaluation of its own phase")
RECENT_IMPROVEMENT = _column("recent_improvement", "relative loss decrease over the last slope_passes evaluations")
VISIT_IMPROVEMENT = _column(
  "visit_improvement",
  "relative fall of its loss trend (least squares) over the last improvement_window share of its own-phase visits",
)
STEADY_IMPROVEMENT = _column("steady_improvement", "share of its own phase's evaluations that lowered the loss")
LOSS_OSCILLATION = _column("loss_oscillation", "share of its own phase's loss variation that is back-and-forth")
LAST_VISIT_POSITION = _column("last_visit_position", "its last training step's position in the stream, in (0, 1]")
CONFIDENCE = _column("confidence", "cartography: mean gold-token probability over evaluations")
VARIABILITY = _column("variability", "cartography: its standard deviation")
CORRECTNESS = _column("correctness", "cartography: share of evaluations with exact match")
FORGETTING_EVENTS = _column("forgetting_events", "cartography: exact-match 1 -> 0 transitions")
CARTOGRAPHY = (CONFIDENCE, VARIABILITY, CORRECTNESS, FORGETTING_EVENTS)

# Diagnosis: the data (`ilp.diagnosis.signals.text_signals`) and the pre-training corpus (`ilp.diagnosis.corpus`).
DUPLICATE_GROUP = _column("duplicate_group", "connected group of near-duplicate prompts (-1: none)")
DUPLICATE_GROUP_SIZE = _column("duplicate_group_size", "prompts in that group")
NEAR_DUPLICATES = _column("near_duplicates", "near-duplicate prompts of the example")
EMBEDDING_DUPLICATES = _column("embedding_duplicates", "of them, pairs only the prompt embeddings found")
DISAGREEING_DUPLICATES = _column("disagreeing_duplicates", "near-duplicates whose target differs")
DUPLICATE_SIMILARITY = _column("duplicate_similarity", "highest similarity to a near-duplicate")
DISAGREEING_SIMILARITY = _column("disagreeing_similarity", "highest similarity to a disagreeing near-duplicate")
DUPLICATE_AGREEMENT = _column("duplicate_agreement", "share of near-duplicates with the same target (NaN: none)")
ANSWERS_PARTNER_TARGET = _column("answers_partner_target", "the greedy answer is a disagreeing near-duplicate's target")
TEMPLATE_SIZE = _column("template_size", "prompts of the example's template")
TEMPLATE_SHARE = _column("template_share", "their share of the data")
ANSWER_FREQUENCY = _column("answer_frequency", "examples with the same normalised target")
RESPONSE_WORDS = _column("response_words", "words in the target")
CORPUS_ENTITY_DOCS = _column("corpus_entity_docs", "retrieved corpus documents naming every slot filler")
CORPUS_SUPPORT = _column("corpus_support", "of them, those stating the whole target")
CORPUS_CONTRADICTION = _column("corpus_contradiction", "of them, those stating another answer of the same kind")
CORPUS_ANSWER_COVERAGE = _column("corpus_answer_coverage", "share of the target's words some entity document states")

# Diagnosis: the attribution (`ilp.diagnosis.attribution.attribute`).
CAUSE = _column("cause", "the first cause whose rule holds, 'unattributed', or 'learned'")
RULES = _column("rules", "causes whose rule holds, ';'-joined in diagnose.rules.order")
FIRED = _column("fired", "every condition that holds, as 'cause:condition', ';'-joined")
_SCORE = "evidence strength for the cause, in [0, 1]"


def meaning(name: str) -> str:
  """What column `name` of the detection or attribution table holds; KeyError for one not named here."""
  if name in _NAMED:
    return _NAMED[name]
  if name in LABELLED:
    return f"diagnose.protocol's {_SUFFIXES[name]}"
  if re.fullmatch(score("[IV]+"), name):
    return _SCORE
  for prefix, (whose, suffixes) in _PREFIXED.items():
    suffix = re.sub(r"_at_\d+$", "_at_<k>", name[len(prefix) :])
    if name.startswith(prefix) and suffix in suffixes:
      return f"{whose}: {_SUFFIXES[suffix]}"
  raise KeyError(f"column {name!r} is not in the schema (ilp/detection/columns.py)")
