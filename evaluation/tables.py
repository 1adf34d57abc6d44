"""Rich tables of quality reports, for the terminal."""

from __future__ import annotations

from rich.table import Table

from vidparse.evaluation.runs import ImageReport, VideoReport


def _percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _roi_caption(settings: dict) -> str:
    roi = settings["roi"]
    where = "whole frame" if roi["mode"] == "whole" else f"ROI margin {roi['margin']}, person height {roi['person_height']}"
    return f"{where}, detector score >= {settings['detector']['score_threshold']}"


def image_table(report: ImageReport) -> Table:
    table = Table(title=f"{report.model} vs {report.truth} ground truth, {report.images} images ({report.scheme} classes)",
                  caption=f"{_roi_caption(report.settings)}. Pixels of n/a classes are not scored, except a model's n/a class "
                          "over ground-truth background, which counts as an error; "
                          f"{100 * report.scored_share:.1f}% of all pixels were scored.", title_justify="left")
    for column, justify in (("class", "left"), ("IoU %", "right"), ("truth px", "right"), ("predicted px", "right"),
                            ("note", "left")):
        table.add_column(column, justify=justify)
    for score in report.classes:
        table.add_row(score.name, _percent(score.iou), f"{score.truth_pixels:,}", f"{score.predicted_pixels:,}",
                      score.note, style="dim" if score.iou is None else None)
    table.add_section()
    scored = sum(score.iou is not None for score in report.classes)
    table.add_row("[bold]mIoU", f"[bold]{_percent(report.miou)}", "", "", f"mean over the {scored} classes scored")
    table.add_row("[bold]pixel accuracy", f"[bold]{_percent(report.pixel_accuracy)}", "", "", "over the pixels scored")
    return table


def video_table(report: VideoReport) -> Table:
    table = Table(title=f"label flicker: {report.model} on {report.video}, frames 0-{report.frames - 1}",
                  caption=f"{_roi_caption(report.settings)}. Flicker: of the pixels that stood still between consecutive "
                          f"frames (no channel changed by more than {report.still_threshold}) and that either frame labels "
                          "as a person, the share whose label changed (coarse: whose coarse class changed). "
                          "Keyframe mode (--parse-every) does not exist yet.",
                  title_justify="left")
    for column in ("parsing", "flicker %", "coarse flicker %", "pixels considered"):
        table.add_column(column, justify="left" if column == "parsing" else "right")
    for row in report.rows:
        table.add_row(row.mode, _percent(row.rate, 2), _percent(row.coarse_rate, 2), f"{row.considered:,}")
    return table
