"""``kitaeru checks``: what this machine can run (device, GPU tier, extras, offline weights, versions)."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Print device, GPU tier, installed extras, offline weights and library versions.")


@app.command("checks")
def checks(
    device: str = typer.Option("auto", "--device", help="Device to check: auto|cuda|cuda:N|mps|cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Print what this machine can run, like 'yolo checks'.

    Example: kitaeru checks --json
    """
    from kitaeru.core.checks import environment_report
    from kitaeru.core.console import print_table

    report = environment_report(device)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    dev = report["device"]
    rows = [("kitaeru", report["kitaeru"]), ("python", report["python"]), ("platform", report["platform"]),
            ("device", f"{dev['device']} ({dev['name']})"), ("GPU tier", dev["tier"]),
            ("memory (GB free/total)", f"{dev['free_gb']}/{dev['total_gb']}" if dev["total_gb"] else "-")]
    rows += [(f"extra [{name}]", "installed" if ok else f"missing: pip install 'kitaeru[{name}]'")
             for name, ok in report["extras"].items()]
    rows += [(f"offline: {name}", path or "absent") for name, path in report["offline_weights"].items()]
    rows += [(name, version) for name, version in report["library_versions"].items() if name not in ("python", "kitaeru")]
    print_table("kitaeru checks", ["what", "value"], rows)
