"""Page "Train": one button runs the pipeline on your recordings as a DVC experiment; follow it, cancel it.

Usage:
    streamlit run app/streamlit_app.py        # then "Train", and "Train on my recordings"

The run is `dvc exp run --name rec-<time> evaluate -S data.source=folder -S
data.path=<record.recordings> -S data.split=<signer|stratified> [-S override...]`
in the app's root (`app.training`): the page shows the exact command, so a
terminal user can run the same. The split is held-out signers when the
recordings' signers fill train, validation and test, else per clip, and the
page says which and why. Extra overrides (one `section.key=value` a line,
prefilled from `record.train_overrides`) are checked against params.yaml
before anything starts.

The run goes on in the background, whatever happens to this page: reload it,
open it in another browser, and it shows the run going (the stage running,
epochs within train, the log's tail, Cancel). A second start while one runs is
refused with a link to it. When the run ends: its validation and test figures
and a button to use the new model on the Live page; or why it failed, in the
pipeline's words, never a traceback.
"""
from __future__ import annotations

from datetime import datetime

import streamlit as st

from app.recordings import RecordingsSummary, recordings_summary
from app.settings import AppSettings, load_settings
from app.state import select_model, selected_model_path
from app.training import (
    ACTIVE,
    CANCELLED,
    EXPERIMENT_TARGET,
    FAILED,
    RUNNING,
    SUCCEEDED,
    VANISHED,
    RunGoing,
    TrainingRun,
    cancel_run,
    effective_status,
    experiment_command,
    going_run,
    latest_run,
    log_tail,
    read_progress,
    read_run,
    shell_line,
    start_run,
)
from stages.lib.params import ParamsError, apply_overrides, parse_override, validate_params

OVERRIDES_KEY = "train_overrides_text"    # the text area of extra -S overrides
RUN_QUERY_PARAMETER = "run"               # ?run=<name>: the page shows that run
REFRESH_SECONDS = 2.0                     # how often a going run's progress is redrawn
STAGE_MARKS = {"done": ":material/check_circle:", "skipped": ":material/redo:", "running": ":material/autorenew:",
               "failed": ":material/error:", "waiting": ":material/radio_button_unchecked:"}
FIGURES = (("val_accuracy", "Validation accuracy"), ("val_macro_f1", "Validation macro F1"),
           ("test_accuracy", "Test accuracy"), ("test_top3_accuracy", "Test top-3 accuracy"),
           ("test_macro_f1", "Test macro F1"), ("num_classes", "Classes"))


def run_link(run: TrainingRun) -> str:
    return f"[{run.name}](train?{RUN_QUERY_PARAMETER}={run.name})"


def overrides_from_text(text: str, settings: AppSettings) -> list[str]:
    """Each non-empty line an override, checked: ParamsError naming the bad one."""
    overrides = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    for override in overrides:
        parse_override(override, "override")
    params = {name: value for name, value in settings.params.items() if name != "record"}
    validate_params(apply_overrides(params, overrides))
    return overrides


def show_recordings(summary: RecordingsSummary, settings: AppSettings) -> None:
    folder = settings.relative(settings.recordings_dir)
    if summary.table.empty:
        st.info(f"No recordings in `{folder}/` yet: record some on the Record page first.")
        return
    st.dataframe(summary.table, hide_index=True)
    counts = ", ".join(f"{count} {split}" for split, count in summary.split.clip_counts.items())
    st.caption(f"`{folder}/` · split `{summary.split.mode}`: {summary.split.reason} · clips: {counts}")
    for warning in summary.warnings:
        st.warning(warning, icon=":material/info:")
    for problem in summary.split.problems:
        st.error(f"Not yet: {problem}.", icon=":material/block:")


def start(settings: AppSettings, summary: RecordingsSummary, overrides: list[str]) -> TrainingRun | None:
    recordings = str(settings.record_setting("recordings"))
    try:
        run = start_run(settings.root, recordings, summary.split.mode, overrides)
    except RunGoing as going:
        where = run_link(going.run) if going.run else "the latest run below"
        st.warning(f"A training run is going already: {where}. One runs at a time; follow it, or cancel it "
                   "there.", icon=":material/hourglass_top:")
        return None
    st.query_params[RUN_QUERY_PARAMETER] = run.name
    return run


def run_to_show(settings: AppSettings) -> TrainingRun | None:
    """The run named in the address (?run=), else the one going, else the latest."""
    named = st.query_params.get(RUN_QUERY_PARAMETER)
    if named:
        run = read_run(settings.root, named)
        if run is not None:
            return run
        st.caption(f"No run called {named!r}; showing the latest.")
    return going_run(settings.root) or latest_run(settings.root)


def show_progress(run: TrainingRun) -> None:
    progress = read_progress(run.log_text(), run.planned_stages)
    if progress.stages:
        st.markdown("  \n".join(f"{STAGE_MARKS.get(state, '')} `{stage}` {state}" for stage, state in progress.stages))
    if progress.current == "train" and progress.epochs:
        st.progress(progress.epoch / progress.epochs, text=f"train: epoch {progress.epoch} of at most "
                    f"{progress.epochs} (early stopping may end it sooner)")
    elif progress.current:
        st.caption(f"Running stage `{progress.current}`…")


def show_metrics(run: TrainingRun) -> None:
    """The run's validation and test figures, each with the number of clips it stands on."""
    metrics = run.state.get("metrics") or {}
    shown = [(key, label, metrics[key]) for key, label in FIGURES if key in metrics]
    for column, (key, label, value) in zip(st.columns(max(len(shown), 1)), shown):
        clips = metrics.get(f"num_{key.split('_')[0]}_clips") if key.startswith(("val_", "test_")) else None
        column.metric(label, f"{value:.1%}" if isinstance(value, float) and value <= 1 else f"{value}",
                      f"on {clips} clip{'s' if clips != 1 else ''}" if clips is not None else None,
                      delta_color="off", delta_arrow="off")
    st.caption("Validation picks checkpoints; the test split is held out for this report only. On a few clips "
               "each figure moves a lot: more clips, and more signers, make them worth more.")


def use_model_button(settings: AppSettings, run: TrainingRun) -> None:
    model = settings.root / run.state["model"]
    if not model.exists():
        st.caption(f"`{run.state['model']}` is gone.")
        return
    if selected_model_path(settings) == model:
        st.success(f"`{run.state['model']}` is the model the Live page uses.", icon=":material/check:")
    elif st.button("Use this model on the Live page", type="primary", icon=":material/videocam:"):
        select_model(model)
        st.rerun()
    st.caption(f"Kept as `{run.state['model']}`; the [Model page](model) lists it with the others.")


def show_run(settings: AppSettings, run: TrainingRun) -> None:
    """One run: progress while it goes, then its metrics, or why it stopped."""
    status = effective_status(settings.root, run)
    started = datetime.fromtimestamp(run.state.get("started_at", 0)).strftime("%Y-%m-%d %H:%M:%S")
    st.subheader(f"Run {run.name}")
    st.caption(f"Started {started} · `{shell_line(run.state.get('command', []))}` · log: "
               f"`{settings.relative(run.log_path)}`")
    if status in ACTIVE:
        if status != RUNNING:
            st.caption("Starting…")
        show_progress(run)
        if status == RUNNING and st.button("Cancel", icon=":material/stop_circle:"):
            if cancel_run(settings.root, run):
                st.toast(f"Cancelling {run.name}…")
            else:
                st.caption("It has ended already.")
    elif status == SUCCEEDED:
        st.success("The run finished: the new model is ready.", icon=":material/task_alt:")
        for warning in run.state.get("warnings") or []:
            st.warning(warning, icon=":material/info:")
        show_metrics(run)
        use_model_button(settings, run)
    elif status == FAILED:
        reasons = run.state.get("reason") or ["no reason found in the log"]
        st.error("The run failed:\n\n" + "\n".join(f"- {reason}" for reason in reasons), icon=":material/error:")
    elif status == CANCELLED:
        st.warning("The run was cancelled. DVC left the workspace as the run had got it; the next run starts "
                   "where it is.", icon=":material/stop_circle:")
    elif status == VANISHED:
        st.warning("The run ended without finishing (its process was killed, or the machine restarted).",
                   icon=":material/help:")
    with st.expander("Log (last lines)", expanded=status in ACTIVE):
        st.code(log_tail(run.log_text()) or "(empty)", language=None)


def follow(settings: AppSettings, run: TrainingRun) -> None:
    """Redraw a going run every few seconds (a fragment: the rest of the page stays); rerun the page when it ends."""
    active = effective_status(settings.root, run) in ACTIVE

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def run_section() -> None:
        current = read_run(settings.root, run.name) or run
        show_run(settings, current)
        if active and effective_status(settings.root, current) not in ACTIVE:
            st.rerun(scope="app")

    run_section()


LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")


def runs_allowed_from_here(settings: AppSettings) -> tuple[bool, str]:
    """(may this page start runs, why not): only when the app listens on localhost (the default in
    .streamlit/config.toml), or params.yaml `app.train_from_network` allows it. Anyone who reaches an
    app opened to the network could otherwise start and cancel runs on this machine."""
    address = str(st.get_option("server.address") or "")
    if address in LOCAL_ADDRESSES or settings.app_setting("train_from_network"):
        return True, ""
    return False, (f"The app listens on `{address or 'every interface'}`, not only on this computer: training "
                   "runs are off, so nobody on the network can start them. Run it on localhost (the default in "
                   "`.streamlit/config.toml`), or set params.yaml `app.train_from_network: true` on a network "
                   "you trust.")


def render() -> None:
    settings = load_settings()
    st.title("Train on your recordings")
    if not (settings.root / ".dvc").is_dir():
        st.info(f"Training from the app runs `dvc exp run` in `{settings.root}`, which is not a DVC repository "
                "(no `.dvc/`). Run the app from the repository (or `git init && dvc init` the folder).")
        return
    st.caption("Runs the pipeline on the Record page's clips as a DVC experiment: it shows in `dvc exp show` like "
               "any other, and goes on if you close this page.")
    st.session_state.setdefault(OVERRIDES_KEY, "\n".join(settings.record_setting("train_overrides")))
    overrides_text = st.text_area("Extra params for this run (one `section.key=value` a line, as `dvc exp run -S`)",
                                  key=OVERRIDES_KEY, height=100,
                                  help="Prefilled from params.yaml `record.train_overrides`; e.g. train.epochs=30.")
    try:
        overrides = overrides_from_text(overrides_text, settings)
        summary = recordings_summary(settings.recordings_dir, settings.record_params, overrides)
    except ParamsError as error:
        st.error(str(error), icon=":material/block:")
        return
    show_recordings(summary, settings)
    command = experiment_command(settings.recordings_dir.resolve().as_posix(), summary.split.mode, overrides,
                                 f"rec-{datetime.now():%Y%m%d-%H%M%S}")
    st.markdown("The same run from a terminal:")
    st.code(shell_line(command), language="bash")
    allowed, why_not = runs_allowed_from_here(settings)
    if not allowed:
        st.warning(why_not, icon=":material/lock:")
    if st.button("Train on my recordings", type="primary", icon=":material/model_training:",
                 disabled=not (summary.can_train and allowed),
                 help=f"`dvc exp run ... {EXPERIMENT_TARGET}`: sample, extract, train, assemble and evaluate."):
        start(settings, summary, overrides)
    run = run_to_show(settings)
    if run is not None:
        follow(settings, run)
