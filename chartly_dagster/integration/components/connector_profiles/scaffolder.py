"""`dg scaffold defs chartly_dagster.integration.ConnectorProfilesComponent <path>`.

Writes a defs.yaml pointing at a `profiles/` folder next to it and a starter profile in
that folder, so a new project loads one working, checked asset right away (its `#dev`
variant fetches from the local sandbox) and its comments say how to adapt it.
"""

from __future__ import annotations

from dagster.components import Scaffolder, ScaffoldRequest, scaffold_component
from pydantic import BaseModel, Field

from ....core.starter import DEFAULT_SANDBOX_PORT, starter_profile

_DEFS_HEADER = """\
# Every connector profile under profiles/ becomes one partitioned asset with two blocking
# checks (envelope_valid, deterministic). profiles/{name}.yaml is a starter: its #dev
# variant fetches from the local sandbox (`chartly-tool sandbox serve --port {port}`);
# its comments say what to change for your API. More profiles:
#   chartly-tool profiles new NAME --pagination MODE --profiles-dir <this folder>/profiles
# Attributes: env (which variants run: dev, staging, prod), storage_root (folder or
# s3://bucket/prefix for the Parquet files), secrets_dir_env_var (the NAME of the variable
# holding a mounted secrets folder), max_partitions_per_run, schedules.
"""


class ConnectorProfilesScaffoldParams(BaseModel):
    """`dg scaffold defs ... --json-params '{"pagination": "offset"}'`."""

    name: str = Field("starter", description="Name of the starter connector profile.")
    pagination: str = Field("cursor", description="Pagination mode of the starter profile.")
    sandbox_port: int = Field(DEFAULT_SANDBOX_PORT,
                              description="Port of the sandbox the #dev variant calls.")


class ConnectorProfilesScaffolder(Scaffolder[ConnectorProfilesScaffoldParams]):
    """Scaffolds the component's defs.yaml and a profiles folder with a starter profile."""

    @classmethod
    def get_scaffold_params(cls) -> type[ConnectorProfilesScaffoldParams]:
        return ConnectorProfilesScaffoldParams

    def scaffold(self, request: ScaffoldRequest[ConnectorProfilesScaffoldParams]) -> None:
        params = request.params or ConnectorProfilesScaffoldParams()
        text = starter_profile(params.name, params.pagination,
                               sandbox_port=params.sandbox_port)
        scaffold_component(request, {"profiles_dir": "profiles", "env": "dev"})
        defs_yaml = request.target_path / "defs.yaml"
        if defs_yaml.is_file():
            header = _DEFS_HEADER.format(name=params.name, port=params.sandbox_port)
            defs_yaml.write_text(header + defs_yaml.read_text(encoding="utf-8"),
                                 encoding="utf-8")
        profiles = request.target_path / "profiles"
        profiles.mkdir(parents=True, exist_ok=True)
        starter = profiles / f"{params.name}.yaml"
        if not starter.exists():
            starter.write_text(text, encoding="utf-8")
