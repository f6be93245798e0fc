"""The ILP world: a synthetic knowledge base, corpora and SFT data with planted causes of ILP, and
the evaluation of finished runs against what it planted.

Fictional people (`p<i>`), cities (`c<i>`), countries (`k<i>`), jobs (`j<i>`) and codes
(`z<i>`) with three relations (person -> birth city -> country; person -> job) and a code table.
A pre-training corpus states a chosen subset of facts in several templates and frequencies (and,
for people who never appear in SFT, as questions and answers, so that the base model can answer
from what it knows, as pre-trained LLMs can); the SFT data asks questions about them, in two
domains (`people`, `codes`) and two phases, with groups planted in configured sizes:

- control: one-hop questions about facts the base model saw often and consistently;
- missing (I): a person the base model knows, asked for a fact pre-training never states;
- conflict (II): the SFT answer contradicts a fact stated often in pre-training;
- inconsistent (III): one question asked several times with contradicting answers; the group is
  the minority answer, `duplicate` the majority's copies;
- forgetting (IV): phase-1 codes that phase-2 codes (same prompt pattern, other people and codes)
  interfere with after they were learned;
- rare (V): a rare compositional question (three known facts in one answer) with few examples;
  its `meta.prerequisites` lists the one-hop questions it composes, so detection can probe them;
- interference: the phase-2 code questions that cause IV. Their codes, like the missing group's
  birthplaces, are facts pre-training never states, so when they stay unlearned the cause is I.

Two designs (`design`). `converged` (the default) plants causes by mechanisms that survive
training to convergence, each one that real SFT data has:
- II: pre-training states the contradicted fact often, also as Q&A in the SFT question's own
  words (`conflict_qa_mentions`), and SFT replays pre-training's Q&A documents (`replay.jsonl`):
  the supervised answer competes with the replayed one for as long as SFT runs (replay of
  pre-training data during fine-tuning: Ouyang et al. 2022; Scialom et al. 2022);
- III: duplicated questions with label noise (one of `inconsistent_copies` copies carries another
  answer; Northcutt et al. 2021 on label errors): the loss has a floor, and a converged model
  gives the majority answer;
- IV: sequential phases with no replay of the earlier SFT data (the paper's left-side forgetting);
- the code table is stated in pre-training for the Q&A people, so code tokens are ones the base
  model has produced before.
`under_trained` is the world of issues 1-21 (paraphrased inconsistent pairs, no replay, no stated
codes), kept for comparison: most of what it leaves unlearned is removed by more epochs.

For the intervention arms the world also writes, drawn with a generator of their own after the
rest is built (so the corpora, SFT data and tokenizer do not change, and every word is already in
the vocabulary): `knowledge.jsonl`, the collection the continual pre-training arms retrieve from,
and `dev.jsonl` / `heldout.jsonl` (`ilp.world.arm_data`).

With `free_form`, every question (SFT, dev, held-out, and the pre-training Q&A documents) is
drawn from `templates.PARAPHRASES` inside a random wrapper (over a hundred phrasings per question
kind, so no prompt pattern is frequent), the two members of an inconsistent pair get different
stems (paraphrased near-duplicates), and the SFT records carry no metadata (no
`meta.prerequisites`): what a user's plain {prompt, response} data looks like. The facts, answers
and planted groups are the same as without it.

Everything is written in the formats a user would bring (JSONL SFT records, text corpora, an HF
tokenizer directory). The planted cause of every example goes to `ground_truth.jsonl`, which no
pipeline code reads; only the evaluation modules here join it back, run by the scripts.

Modules: config (WorldConfig, the planted groups and their causes), templates (the sentences,
questions and paraphrases, the vocabulary), generate (the people, facts, documents and SFT records
with their ground truth, in memory), arm_data (the knowledge collection, dev and held-out
questions, general text), files (the world written to disk, the ground truth read back);
evaluation (a run's unlearned rates per planted group and the world's targets), diagnosis_validation
(the diagnosis scored against the planted causes), sensitivity (that score as each rule threshold
moves), interventions_evaluation (the arms' effect on the planted causes). The package imports
data, detection, diagnosis, scoring, report and interventions; none of them imports it.
"""
