"""The Training page: curves of every run of a recipe, the start form, and the live job monitor."""

from __future__ import annotations

from typing import Any

import streamlit as st

from kitaeru.ui import curves as C
from kitaeru.ui import forms as F
from kitaeru.ui import jobs as J
from kitaeru.ui import runs as R
from kitaeru.ui.widgets import curve_grid, metrics_of, one_line

MONITOR_JOBS = 5


def page_training(roots: R.Roots) -> None:
    st.header("Training")
    runs = [r for r in R.find_runs(roots) if (r.path / "results.csv").exists()]
    if runs:
        curves(runs)
    else:
        st.info("No run with a results.csv yet.")
    st.divider()
    start_form(roots)
    st.divider()
    job_monitor(roots)


def curves(runs: list[R.RunInfo]) -> None:
    """TensorBoard-like: every run of the chosen recipe on by default, a colour per run, smoothing,
    log y, epoch/step/wall-time x; and the config differences between two runs."""
    recipes = list(dict.fromkeys(r.recipe for r in runs))
    top = st.columns([2, 5])
    recipe = top[0].selectbox("Curves of recipe", recipes, key="curve-recipe")
    of_recipe = [r for r in runs if r.recipe == recipe]
    names = [r.name for r in of_recipe]
    chosen = top[1].multiselect("Runs to compare", names, default=names, key=f"curve-runs-{recipe}")
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    for name in chosen:
        run = of_recipe[names.index(name)]
        columns, rows, problem = R.read_curves(run.path)
        if problem:
            st.warning(problem)
            continue
        tables[name] = (columns, rows)
    if not tables:
        return
    controls = st.columns([3, 3, 2, 4])
    modes = list(dict.fromkeys(m for cols, _ in tables.values() for m in C.x_modes(cols)))
    x_mode = controls[0].radio("x axis", modes, horizontal=True, key="curve-x")
    smoothing = controls[1].slider("smoothing", 0.0, 0.99, 0.0, 0.01, key="curve-smooth",
                                   help="TensorBoard's exponential moving average (0 = raw values)")
    log_y = controls[2].toggle("log y", key="curve-log")
    metrics = metrics_of(tables)
    shown = controls[3].multiselect("Curves", metrics, default=metrics[:8], key="curve-metrics")
    curve_grid(tables, shown, C.colours(names), key="curve", x_mode=x_mode, smoothing=smoothing, log_y=log_y)
    if len(of_recipe) > 1:
        with st.expander("Config differences between two runs"):
            config_diff(of_recipe)


def config_diff(runs: list[R.RunInfo]) -> None:
    names = [r.name for r in runs]
    left, right = st.columns(2)
    a = left.selectbox("Run A", names, index=0, key="diff-a")
    b = right.selectbox("Run B", names, index=1 if len(names) > 1 else 0, key="diff-b")
    config_a, problem_a = C.read_config(runs[names.index(a)].path)
    config_b, problem_b = C.read_config(runs[names.index(b)].path)
    for problem in (problem_a, problem_b):
        if problem:
            st.warning(problem)
    if problem_a or problem_b:
        return
    rows = C.config_diff(config_a, config_b)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="diff-table")
    else:
        st.success("The two runs' resolved configs are the same.")


def _field_widget(recipe: str, field: F.FormField) -> Any:
    key = f"opt-{recipe}-{field.path}"
    label = field.label + (" (required)" if field.required else "")
    if field.kind == "bool":
        default = f"(default: {field.default_text or 'off'})"
        choice = st.selectbox(label, [default, "on", "off"], key=key, help=field.help)
        return None if choice == default else choice
    if field.kind == "choice":
        default = f"(default: {field.default_text})" if field.default_text else "(default)"
        choice = st.selectbox(label, [default, *field.choices], key=key, help=field.help)
        return None if choice == default else choice
    return st.text_input(label, key=key, help=field.help, placeholder=field.default_text or "(default)")


def start_form(roots: R.Roots) -> None:
    """The fields of ``kitaeru <recipe> train`` from its schema; only the changed ones are passed on."""
    st.subheader("Start a training")
    recipe = st.selectbox("Recipe", list(F.TRAINING_RECIPES), key="start-recipe")
    fields = F.form_fields(recipe)
    presets = F.presets(recipe)
    main, rest = F.split_main(recipe, fields)
    with st.form("start-training"):
        preset = st.selectbox("preset", ["(none)", *presets], key=f"opt-{recipe}-preset") if presets else "(none)"
        values: dict[str, Any] = {}
        grid = st.columns(2)
        for n, field in enumerate(main):
            with grid[n % 2]:
                values[field.path] = _field_widget(recipe, field)
        with st.expander(f"all settings ({len(rest)} more)"):
            grid = st.columns(2)
            for n, field in enumerate(rest):
                with grid[n % 2]:
                    values[field.path] = _field_widget(recipe, field)
        default_out = str(roots.paths[0] / recipe) if roots.paths else f"runs/{recipe}"
        output_dir = st.text_input("output folder", value=default_out, key=f"opt-{recipe}-out")
        extra = st.text_input("more options (as on the command line, e.g. --seed 3 key=value)", key=f"opt-{recipe}-extra")
        submitted = st.form_submit_button("Start")
    if submitted:
        try:
            roots.resolve(output_dir)
        except R.OutsideRoots:
            st.error(f"{output_dir}: choose an output folder inside the run folders this dashboard watches")
            return
        try:
            args = F.field_arguments(fields, values)
            command = F.training_command(recipe, args, str(roots.resolve(output_dir)), extra,
                                         preset=None if preset == "(none)" else preset)
        except ValueError as exc:
            st.error(one_line(exc))
            return
        job = J.start_job(recipe, command, roots.paths[0], str(roots.resolve(output_dir)))
        st.success(f"started (pid {job.pid}): {job.display_command}")


def job_monitor(roots: R.Roots) -> None:
    if not roots.paths:
        return
    jobs = J.list_jobs(roots.paths[0])
    if not jobs:
        return
    st.subheader("Started from this dashboard")
    live = any(J.outcome(j).state == "running" for j in jobs)

    @st.fragment(run_every=2 if live else None)
    def panel() -> None:
        for n, job in enumerate(J.list_jobs(roots.paths[0])[:MONITOR_JOBS]):
            state = J.outcome(job)
            with st.expander(f"{job.recipe} · {job.id} · {state.state}", expanded=n == 0 or state.state == "running"):
                job_panel(roots, job, state)

    panel()


def job_panel(roots: R.Roots, job: J.Job, state: J.Outcome) -> None:
    st.code(job.display_command, language="bash")
    if state.state == "running":
        st.info(f"{state.message} · the log and curves refresh every 2 s")
    elif state.state == "completed":
        st.success(state.message)
    elif state.state in ("interrupted", "gone"):
        st.warning(state.message)
    else:
        st.error(state.message)
    if state.resume and state.state != "running":
        st.code(state.resume, language="bash")
        if st.button("Resume", key=f"resume-{job.id}", type="primary"):
            try:
                new = J.resume_job(job, roots)
            except (ValueError, OSError) as exc:
                st.error(f"resume failed: {one_line(exc)}")
            else:
                st.toast(f"resumed (pid {new.pid}): {new.display_command}")
                st.rerun()  # the whole page: the monitor refreshes itself while a job runs
    run_dir = J.job_run_dir(job)
    if run_dir is not None:
        columns, rows, problem = R.read_curves(run_dir)
        if not problem:
            metrics = metrics_of({job.id: (columns, rows)})[:2]
            curve_grid({job.id: (columns, rows)}, metrics, C.colours([job.id]), key=f"job-{job.id}")
    st.code(J.log_tail(job) or "(no output yet)", language="text")
    if state.state == "running" and st.button("Stop (Ctrl-C: resumable)", key=f"stop-{job.id}"):
        J.stop_job(job)
        code = J.wait(job, 20)
        if code is None:
            st.info("stop sent; the run is finishing its step")
        else:
            st.rerun()
