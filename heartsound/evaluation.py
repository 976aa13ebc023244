"""Recording-level scoring: aggregate window probabilities, compute metrics, draw the confusion matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

# scikit-learn is imported inside the scoring functions: predict only needs aggregate(),
# and importing sklearn.metrics would cost it ~0.8 s of cold start.

# PASCAL screening view: abnormal vs normal; artifact is not a heart condition.
SCREENING_ABNORMAL = ("murmur", "extrastole", "extrahls")
SCREENING_NORMAL = ("normal",)
SCREENING_CLASSES = {
    "pascal": {"abnormal": SCREENING_ABNORMAL, "normal": SCREENING_NORMAL},
    # The 2016 challenge scored abnormal (REFERENCE 1) against normal (-1).
    "physionet2016": {"abnormal": ("abnormal",), "normal": ("normal",)},
}
# CirCor 2022 weighted accuracy: a missed murmur costs most, an Unknown (poor recording) next.
MURMUR_WEIGHTS = {"Present": 5, "Unknown": 3, "Absent": 1}


def aggregate(window_probs: np.ndarray, recording_ids, how: str = "mean") -> pd.DataFrame:
    """Window probabilities -> one row of class probabilities per recording (order of first appearance)."""
    frame = pd.DataFrame(window_probs)
    frame["recording_id"] = list(recording_ids)
    grouped = frame.groupby("recording_id", sort=False)
    probs = grouped.mean() if how == "mean" else grouped.max()
    if how == "max":
        probs = probs.div(probs.sum(axis=1), axis=0)
    return probs


def encode(labels, classes) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def recording_predictions(probs: np.ndarray, windows, classes, how: str):
    """Window probabilities -> (recording ids, true labels, predicted labels, recording probabilities, groups)."""
    rec_probs = aggregate(probs, windows["recording_id"], how)
    firsts = windows.groupby("recording_id", sort=False)[["label", "group"]].first().loc[rec_probs.index]
    predicted = np.asarray(classes)[rec_probs.to_numpy().argmax(axis=1)]
    return (
        rec_probs.index.to_list(),
        firsts["label"].to_numpy(),
        predicted,
        rec_probs.to_numpy(),
        firsts["group"].to_numpy(),
    )


def predictions_table(ids, y_true, y_pred, rec_probs, classes):
    """One row per recording: recording_id, label, predicted, p_<class> for every class."""
    table = pd.DataFrame(rec_probs, columns=[f"p_{c}" for c in classes])
    table.insert(0, "recording_id", ids)
    table.insert(1, "label", y_true)
    table.insert(2, "predicted", y_pred)
    return table


def screening_metrics(y_true, y_pred, abnormal=SCREENING_ABNORMAL, normal=SCREENING_NORMAL) -> dict | None:
    """Sensitivity, specificity and MAcc = (Se + Sp) / 2 with abnormal as positive.

    Recordings whose true label is neither abnormal nor normal are left out; a prediction
    outside both counts as not abnormal. None when either side has no recordings.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = np.isin(y_true, abnormal) | np.isin(y_true, normal)
    true_pos = np.isin(y_true[keep], abnormal)
    pred_pos = np.isin(y_pred[keep], abnormal)
    if true_pos.sum() == 0 or (~true_pos).sum() == 0:
        return None
    se = float((pred_pos & true_pos).sum() / true_pos.sum())
    sp = float((~pred_pos & ~true_pos).sum() / (~true_pos).sum())
    return {"sensitivity": se, "specificity": sp, "macc": (se + sp) / 2, "n_recordings": int(keep.sum())}


def patient_murmur(recording_labels) -> str:
    """A CirCor patient's murmur class from its recordings' classes.

    Present if any recording is Present (a murmur heard at one location makes the patient
    Present, as CirCor annotates it), else Unknown if any is Unknown, else Absent. On true labels
    this gives back the patient's Murmur column; on predictions, the one answer per patient the
    challenge scores.
    """
    labels = set(recording_labels)
    for murmur in ("Present", "Unknown"):
        if murmur in labels:
            return murmur
    return "Absent"


def weighted_murmur_accuracy(patient_true, patient_pred) -> float:
    """The CirCor 2022 challenge's weighted accuracy over patients.

    Correct patients count with their true class's weight (Present 5, Unknown 3, Absent 1):
    sum(w[true] * (pred == true)) / sum(w[true]), so missing a murmur costs most.
    """
    patient_true, patient_pred = np.asarray(patient_true), np.asarray(patient_pred)
    unknown = set(patient_true) - set(MURMUR_WEIGHTS)
    if unknown:
        raise ValueError(f"murmur labels must be {', '.join(MURMUR_WEIGHTS)}, got {sorted(unknown)}")
    weights = np.array([MURMUR_WEIGHTS[label] for label in patient_true], dtype=float)
    return float((weights * (patient_true == patient_pred)).sum() / weights.sum())


def murmur_metrics(y_true, y_pred, groups) -> dict | None:
    """CirCor 2022 patient-level murmur scores from recording labels and their patients (groups).

    Returns weighted accuracy (the challenge's), plain accuracy and the patient count; None
    when there are no recordings.
    """
    recordings = pd.DataFrame({"true": np.asarray(y_true), "pred": np.asarray(y_pred), "patient": np.asarray(groups)})
    if recordings.empty:
        return None
    patients = recordings.groupby("patient").agg({"true": patient_murmur, "pred": patient_murmur})
    return {
        "weighted_accuracy": weighted_murmur_accuracy(patients["true"], patients["pred"]),
        "accuracy": float((patients["true"] == patients["pred"]).mean()),
        "n_patients": int(len(patients)),
    }


def dataset_metrics(dataset: str, y_true, y_pred, groups=None) -> dict:
    """Metrics a dataset's own literature reports, beside the common ones (keyed by name).

    pascal and physionet2016: "screening" (Se, Sp, MAcc with abnormal positive); circor2022:
    "murmur" at patient level, which needs the recordings' groups (left out without them).
    """
    if dataset in ("pascal", "physionet2016"):
        classes = SCREENING_CLASSES[dataset]
        screening = screening_metrics(y_true, y_pred, abnormal=classes["abnormal"], normal=classes["normal"])
        return {"screening": screening} if screening is not None else {}
    if dataset == "circor2022" and groups is not None:
        murmur = murmur_metrics(y_true, y_pred, groups)
        return {"murmur": murmur} if murmur is not None else {}
    return {}


def score(y_true, y_pred, classes, dataset: str, groups=None, probs=None) -> dict:
    """All recording-level metrics: the common ones plus the dataset's own; with the recordings' class
    probabilities, the screening ROC AUC too."""
    metrics = {**classification_metrics(y_true, y_pred, classes), **dataset_metrics(dataset, y_true, y_pred, groups)}
    if probs is not None and "screening" in metrics:
        metrics["screening"]["roc_auc"] = screening_auc(y_true, abnormal_score(probs, classes, dataset), dataset)
    return metrics


def screening_auc(y_true, scores, dataset: str) -> float | None:
    """ROC AUC of abnormal_score over the recordings labelled abnormal or normal; None without both."""
    from sklearn.metrics import roc_auc_score

    sides = SCREENING_CLASSES.get(dataset)
    if sides is None:
        return None
    y_true = np.asarray(y_true)
    abnormal, normal = np.isin(y_true, sides["abnormal"]), np.isin(y_true, sides["normal"])
    if not abnormal.any() or not normal.any():
        return None
    heart = abnormal | normal
    return float(roc_auc_score(abnormal[heart], np.asarray(scores)[heart]))


def abnormal_score(probs, classes, dataset: str) -> np.ndarray | None:
    """Each recording's screening score: the probability of the abnormal classes given a heart class, P(abnormal) /
    (P(abnormal) + P(normal)), so that PASCAL's artifact probability does not rank a recording. None for a dataset
    without a screening view."""
    sides = SCREENING_CLASSES.get(dataset)
    if sides is None:
        return None
    probs, classes = np.asarray(probs, dtype=np.float64), list(classes)
    abnormal = probs[:, [classes.index(c) for c in sides["abnormal"]]].sum(axis=1)
    normal = probs[:, [classes.index(c) for c in sides["normal"]]].sum(axis=1)
    total = abnormal + normal
    return np.divide(abnormal, total, out=np.full_like(total, 0.5), where=total > 0)


def subset_scores(y_true, y_pred, dataset: str, scores=None) -> dict:
    """Scores of recordings that may lack some classes (one source, one device): accuracy, balanced accuracy,
    macro-F1 and per-class recall over the classes the subset has, and the screening sensitivity and specificity
    as far as it has abnormal and normal recordings (MAcc only with both).

    With each recording's abnormal_score, and both sides present, also the screening ROC AUC: how well the scores
    rank abnormal above normal whatever the threshold, which tells a shifted threshold (MAcc low, AUC high) from a
    model that cannot tell the two apart on this source (both low).
    """
    import warnings

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = sorted(set(y_true))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predictions of a class the subset lacks: scored as misses
        out = classification_metrics(y_true, y_pred, present)
    out["classes"] = present
    per_class = out.pop("per_class")
    out["recall"] = {c: per_class[c]["recall"] for c in present}
    sides = SCREENING_CLASSES.get(dataset)
    if sides:
        abnormal, normal = np.isin(y_true, sides["abnormal"]), np.isin(y_true, sides["normal"])
        called_abnormal = np.isin(y_pred, sides["abnormal"])
        screening = {}
        if abnormal.any():
            screening["sensitivity"] = float(called_abnormal[abnormal].mean())
        if normal.any():
            screening["specificity"] = float((~called_abnormal[normal]).mean())
        if len(screening) == 2:
            screening["macc"] = (screening["sensitivity"] + screening["specificity"]) / 2
            if scores is not None:
                screening["roc_auc"] = screening_auc(y_true, scores, dataset)
        out["screening"] = screening
    return out


def classification_metrics(y_true, y_pred, classes) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and per-class precision/recall/F1/support."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, classification_report, f1_score

    report = classification_report(y_true, y_pred, labels=list(classes), output_dict=True, zero_division=0)
    per_class = {
        c: {
            "precision": report[c]["precision"],
            "recall": report[c]["recall"],
            "f1": report[c]["f1-score"],
            "support": int(report[c]["support"]),
        }
        for c in classes
    }
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(classes), average="macro", zero_division=0)),
        "n_recordings": int(len(y_true)),
        "per_class": per_class,
    }
    return metrics


def plot_confusion(y_true, y_pred, classes, path) -> None:
    """Confusion matrix normalised by true class (rows sum to 1), with class names and counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y_true, y_pred, labels=list(classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(1.3 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({counts[i, j]})",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8,
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Confusion matrix (rows normalised by true class)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
