"""`dg scaffold defs chartly_dagster.integration.ConnectorProfilesComponent <path>`.

Writes a defs.yaml pointing at a `profiles/` folder next to it, so a new project starts
with the layout the component expects.
"""

from __future__ import annotations

from dagster.components import Scaffolder, ScaffoldRequest, scaffold_component


class ConnectorProfilesScaffolder(Scaffolder):
    """Scaffolds the component's defs.yaml and an empty profiles folder."""

    def scaffold(self, request: ScaffoldRequest) -> None:
        scaffold_component(request, {"profiles_dir": "profiles", "env": "dev"})
        (request.target_path / "profiles").mkdir(parents=True, exist_ok=True)
