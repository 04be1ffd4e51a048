"""Every public MLflow metric, param and tag name, defined once.

Dashboards, notebooks and users' scripts depend on these strings: change them only with a migration note.
"""

from __future__ import annotations

# --- metrics of a trial (mean over CV folds unless the name says otherwise) -------------------------
ACCURACY = "accuracy"                # classification accuracy; HR@k for recommenders
ACCURACY_STD = "accuracy_std"        # std over folds
SIZE_BYTES = "size_bytes"            # byte length of the packed artifact file
SIZE_BYTES_STD = "size_bytes_std"    # std over folds of the file size (each fold writes its own file)
LATENCY_MS = "latency_ms"            # p50 per request on the loaded model, at latency.batch_size
LATENCY_P90_MS = "latency_p90_ms"
THROUGHPUT = "throughput_per_s"      # samples/s at latency.throughput_batch
COMPRESSION_RATIO = "compression_ratio"  # reference size_bytes / size_bytes
SPEEDUP = "speedup"                  # reference latency / latency: paired (timed against the reference
                                     # in the same process, alternating blocks) when the study keeps its
                                     # reference artifacts, else reference latency_ms / latency_ms
SPEEDUP_CI_LOW = "speedup_ci_low"    # 95% bootstrap interval (over blocks) of the paired speedup,
SPEEDUP_CI_HIGH = "speedup_ci_high"  # mean over folds of each fold's bounds
LATENCY_CI_LOW = "latency_ci_low"    # the same interval as latency: reference latency / speedup bound
LATENCY_CI_HIGH = "latency_ci_high"
LATENCY_MEASURED_MS = "latency_measured_ms"  # paired trials: the absolute latency measured in this process
                                     # (the same number as latency_ms, which stays measured; the paired
                                     # speedup is the comparison machine load cancels out of)
LATENCY_NOISE = "latency_noise"      # parent run: the reference timed against itself (A/A), relative
                                     # half-width of its speedup interval; Pareto ties latencies within it
LATENCY_OVERHEAD_MS = "latency_overhead_ms"        # parent run: an empty forward in the reference's runtime
LATENCY_OVERHEAD_SHARE = "latency_overhead_share"  # parent run: latency_overhead_ms / reference latency_ms
SPARSITY = "sparsity"                # share of zero weights among prunable weights
AVG_BITS = "avg_bits"                # bits per kept weight in the file
FIT_SECONDS = "fit_seconds"          # train + compress + fine-tune wall time per fold
TRAIN_SECONDS = "train_seconds"      # the fp32 base: preprocessing + training (or loading it from the base cache)
COMPRESS_SECONDS = "compress_seconds"  # compression + fine-tune + encoding
BASE_CACHED = "base_cached"          # share of folds whose fp32 base came from the base cache (per fold: 0 or 1)
FOLDS_RUN = "folds_run"              # folds a trial ran (fewer than cv.folds when it was stopped early)
SIZE_KIB = "size_kib"                # size_bytes / 1024: the size a person reads in the MLflow run list
FOLD_METRIC = "{metric}/fold{fold}"  # per-fold values of FOLD_COLUMNS: accuracy/fold0, ... (one value each, not steps)
PACK_SECONDS = "pack_seconds"        # writing the artifact file, per fold
EVAL_SECONDS = "eval_seconds"        # load + latency + accuracy of the artifact, per fold
TRIAL_SECONDS = "trial_seconds"      # whole trial wall time: sampling, all folds, MLflow logging, tell
NDCG = "ndcg"                        # recommenders: NDCG@k
POPULARITY_HR = "popularity_hr"      # recommenders, parent run: HR@k of the popularity baseline (same folds)
POPULARITY_NDCG = "popularity_ndcg"  # recommenders, parent run: NDCG@k of the popularity baseline

REFERENCE_PREFIX = "reference_"      # parent run: reference_accuracy, reference_size_bytes, ...
REFERENCE_LONG_ACCURACY = "reference_long_accuracy"  # parent run: the fp32 reference trained for the space's
                                     # longest budget (max train.epochs + max compress.finetune_epochs)
REFERENCE_LONG_EPOCHS = "reference_long_epochs"
N_PARETO = "n_pareto"
HYPERVOLUME = "hypervolume"

#: objectives a study may optimize, with their direction
OBJECTIVE_DIRECTIONS: dict[str, str] = {
    ACCURACY: "maximize",
    SIZE_BYTES: "minimize",
    LATENCY_MS: "minimize",
    LATENCY_P90_MS: "minimize",
    COMPRESSION_RATIO: "maximize",
    SPEEDUP: "maximize",
    THROUGHPUT: "maximize",
}

#: objectives measured by timing: the Pareto front treats their differences within the study's
#: ``latency_noise`` as ties (:func:`search.pareto.tied_non_dominated_mask`); the others compare exactly
TIMED_OBJECTIVES = (LATENCY_MS, LATENCY_P90_MS, SPEEDUP, THROUGHPUT)

# --- params of a trial besides the sampled ones --------------------------------------------------
QUANT_SCHEME = "compress.quant.scheme"            # logged by every trial, sampled or not
EFFECTIVE_BITS = "compress.quant.effective_bits"  # bits per weight: 32 none, 1 binary, log2(3) ternary,
                                                  # compress.quant.bits otherwise (parallel coordinates)

# --- tags -------------------------------------------------------------------------------------------
ROLE = "role"                        # study | trial | reference | reproduce | final
STUDY_NAME = "study_name"
TRIAL_NUMBER = "trial_number"
STATE = "state"                      # COMPLETE | FAIL | PRUNED | RUNNING
PARETO = "pareto"                    # "true" | "false", set after the study
ERROR = "error"                      # one-line error of a failed trial
RUNTIME = "runtime"                  # which runtime served the loaded model (fp32_dense, int8_dynamic, ...)
REPRODUCES = "reproduces"            # run id a reproduce run re-ran
UNCOMPRESSED_MODULES = "uncompressed_modules"  # trial run: JSON list of a user model's layers kept in fp32
RECIPE = "recipe"                    # trial run: the seed recipe (conf/recipe/<name>.yaml) the trial ran
SHRINK_OF = "shrink_of"              # trial run: the trial a shrink step started from (search/shrink.py)
SHRINK_TOLERANCE = "shrink_tolerance"  # trial run: the accuracy loss that shrink step's parent was within
NOTE = "mlflow.note.content"         # MLflow description (markdown) of an experiment or a run
EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag read by the MLflow 3 UI: which view it opens

# --- artifacts --------------------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
PARETO_CSV = "pareto.csv"
PARETO_HTML = "pareto.html"
PARETO_PNG = "pareto.png"
FOLDS_TABLE = "folds.json"           # trial run: every per-fold value, an MLflow table (artifact view)
SPLIT_ARTIFACT = "split.json"        # parent run: {"dev": [...], "test": [...], "folds": [val idx per fold]}
FINAL_ARTIFACT = "model.sqz"         # final run: the shipped artifact (fit on all development rows)
ROWS_ARTIFACT = "rows.json"          # final run: {"train": [...], "test": [...]} row indices it used
PYFUNC_ARTIFACT = "model"            # final run: the MLflow pyfunc wrapping model.sqz (when registered)

# --- reproduce / final (search.reproduce, search.export) -------------------------------------------
TEST_PREFIX = "test_"                # final run metrics: test_accuracy, test_size_bytes, ... (held-out test split)
FOLD_RUNTIMES = "fold_runtimes"      # trial run tag: JSON list, the runtime each CV fold was scored on
REPRODUCED = "reproduced"            # reproduce run tag: "true" | "false"
