"""The ``vre`` command: one entry point, sub-commands by domain."""

from __future__ import annotations

import typer

from vre import __version__
from vre.cli import catalogue, data, identity, processes, rse, rules, workflows

app = typer.Typer(
    name="vre",
    help="Virtual Research Environment: data lake, workflows and preservation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command()(processes.up)
app.command()(processes.serve)
app.command()(processes.worker)
app.command()(identity.login)
app.command()(identity.whoami)
app.command("password", help="Change your own password (an admin: anyone's, with NAME).")(
    identity.account_password
)
app.add_typer(identity.account_app, name="account")
app.add_typer(identity.token_app, name="token")
app.add_typer(catalogue.scope_app, name="scope")
app.add_typer(catalogue.dataset_app, name="dataset")
app.add_typer(catalogue.container_app, name="container")
app.command()(catalogue.attach)
app.command()(catalogue.detach)
app.command()(catalogue.ls)
app.command("show")(catalogue.show_did)
app.add_typer(catalogue.meta_app, name="meta")
app.add_typer(rse.rse_app, name="rse")
app.command()(data.upload)
app.command()(data.download)
app.command()(data.replicas)
app.command("erase")(rules.erase)
app.add_typer(rules.rule_app, name="rule")
app.add_typer(rules.quota_app, name="quota")
app.command("transfers")(rules.transfers_cmd)
app.command("reaper")(rules.reaper_cmd)
app.command("run")(workflows.run)
app.command("runs")(workflows.runs_cmd)
app.command("status")(workflows.status)
app.command("logs")(workflows.logs)
app.command("fetch")(workflows.fetch)
app.command("stop")(workflows.stop)
app.command("restart")(workflows.restart)
app.command("delete")(workflows.delete)
app.add_typer(workflows.secret_app, name="secret")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
