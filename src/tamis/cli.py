"""The ``tamis`` command line: one sub-command per tool, plus ``tamis demo``."""

from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console

from tamis.report import Section, write_report

app = typer.Typer(help="tamis: a fine sieve for what matters behind a model.", no_args_is_help=True)
console = Console()

# Each tool exposes ``cli.app`` (a typer app) and ``demo.demo_section(out_dir, fast)``.
TOOLS: dict[str, str] = {
    "attribute": "tamis.attribution",
    "density": "tamis.density",
    "seeds": "tamis.seeds",
    "rationale": "tamis.rationale",
}


def _register_tools() -> None:
    for name, package in TOOLS.items():
        try:
            module = importlib.import_module(f"{package}.cli")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(package):
                continue  # tool not built yet
            raise
        app.add_typer(module.app, name=name)


def free_threads(cores: int, load: float) -> int:
    """Cores not already busy (at least 1): torch threads that do not oversubscribe.

    Measured on 2 cores (`tamis demo --only attribute`): with one other busy thread,
    2 torch threads took 46 s against 15 s for 1 (quiet: 11.7 s against 14.4 s).
    """
    return max(1, cores - round(max(0.0, load)))


@app.command()
def demo(
    out: Path = typer.Option(Path("tamis-demo"), help="Folder for index.html and its pictures."),
    only: list[str] = typer.Option([], help="Run only these tools' sections (e.g. attribute)."),
    data_dir: Path | None = typer.Option(None, help="Fashion-MNIST folder (IDX .gz files)."),
    threads: int = typer.Option(0, help="torch CPU threads (0: one per core not already "
                                "busy, by the 1-minute load average)."),
) -> None:
    """Run every tool on embedded defaults and write an HTML report with pictures."""
    import os

    import torch

    torch.set_num_threads(threads or free_threads(os.cpu_count() or 1, os.getloadavg()[0]))
    console.print(f"torch threads: {torch.get_num_threads()}")
    out.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    t0 = time.perf_counter()
    for name, package in TOOLS.items():
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(f"{package}.demo")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(package):
                continue
            raise
        console.rule(f"[bold]{name}")
        t = time.perf_counter()
        try:
            section = module.demo_section(out, data_dir=data_dir)
        except Exception as exc:  # a failing section must not hide the others
            section = Section(title=name, error=f"{exc}\n{traceback.format_exc()}")
            console.print(f"[red]{name} demo failed: {exc}")
        section.console.append(f"({time.perf_counter() - t:.1f} s)")
        for line in section.console:
            console.print(line)
        sections.append(section)
    path = write_report(out, sections)
    console.print(f"\nReport: [bold]{path}[/] ({time.perf_counter() - t0:.1f} s in all)")
    if any(s.error for s in sections):
        raise typer.Exit(code=1)


_register_tools()

if __name__ == "__main__":
    app()
