"""Rich tables of quality reports, for the terminal."""

from __future__ import annotations

from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from vidparse.evaluation.runs import ImageReport, VideoReport


def _percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _roi_caption(settings: dict) -> str:
    roi = settings["roi"]
    upscale = f" (at most {roi['max_upscale']:g}x the box)" if roi.get("max_upscale") else ""
    where = ("whole frame" if roi["mode"] == "whole"
             else f"ROI margin {roi['margin']}, person height {roi['person_height']}{upscale}")
    return f"{where}, detector score >= {settings['detector']['score_threshold']}"


def image_table(report: ImageReport) -> Table:
    weights = f" ({escape(report.settings['model_path'])})" if report.settings.get("model_path") else ""
    table = Table(title=f"{report.model}{weights} vs {report.truth} ground truth, {report.images} images "
                        f"({report.scheme} classes)",
                  caption=f"{_roi_caption(report.settings)}. Pixels of n/a classes are not scored, except a model's n/a class "
                          "over ground-truth background, which counts as an error; "
                          f"{100 * report.scored_share:.1f}% of all pixels were scored.", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (("class", "left"), ("IoU %", "right"), ("truth px", "right"),
                                                      ("predicted px", "right"), ("note", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for score in report.classes:
        table.add_row(score.name, _percent(score.iou), f"{score.truth_pixels:,}", f"{score.predicted_pixels:,}",
                      score.note, style="dim" if score.iou is None else None)
    table.add_section()
    scored = sum(score.iou is not None for score in report.classes)
    few = scored < 3  # background and one or two classes
    note = f"mean over the {scored} class{'' if scored == 1 else 'es'} scored" + (
        ": the others are n/a (their notes say why); not comparable with a mean over more classes" if few else "")
    table.add_row("[bold]mIoU", f"[bold]{_percent(report.miou)}" + (" (!)" if few else ""), "", "", note)
    table.add_row("[bold]pixel accuracy", f"[bold]{_percent(report.pixel_accuracy)}", "", "", "over the pixels scored")
    return table


def video_table(report: VideoReport) -> Table:
    table = Table(title=f"flicker and agreement: {report.model} on {escape(report.video)}, frames 0-{report.frames - 1}",
                  caption=f"{_roi_caption(report.settings)}. Flicker: of the pixels that stood still between consecutive "
                          f"frames (no channel changed by more than {report.still_threshold}) and that either frame labels "
                          "as a person, the share whose label changed (coarse: whose coarse class changed). Presence "
                          "flicker: persons present, missing for 1-3 frames, present again. Agreement: each label map "
                          "against the one before it (part mIoU, person IoU). Moved: the same with each label map "
                          "moved onto the next frame by the input's optical flow (DIS medium), where that flow is "
                          "reliable (forward-backward check): labels that move with the people score high. Vs parse: "
                          "the labels written against the frame's own parse. ID switches need --truth with rows on these "
                          "frames, and tracking (n/a otherwise). "
                          "Keyframe mode (--parse-every) is not measured here.",
                  title_justify="left")
    columns = ("labels", "flicker %", "coarse flicker %", "pixels considered", "presence flickers", "persons",
               "part mIoU %", "person IoU %", "moved part mIoU %", "moved person IoU %", "vs parse part mIoU %",
               "vs parse person IoU %", "ID switches")
    for column in columns:
        table.add_column(column, justify="left" if column == "labels" else "right")
    for row in report.rows:
        table.add_row(row.mode, _percent(row.rate, 2), _percent(row.coarse_rate, 2), f"{row.considered:,}",
                      f"{row.presence_flickers}", f"{row.person_frames:,}", _percent(row.part_agreement),
                      _percent(row.person_agreement), _percent(row.warped_part), _percent(row.warped_person),
                      _percent(row.parse_part), _percent(row.parse_person),
                      "n/a" if row.id_switches is None else f"{row.id_switches}")
    return table
