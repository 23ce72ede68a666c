"""Session protocol templates (`configs/protocols/*.toml`): sites, TPD, LRJ, prompts and phases.

A template lists the session's phases in order, e.g. baseline NRS → baseline TPD → baseline LRJ →
needling with e-stim and localization prompts → post TPD → post LRJ → post NRS. The monitor and
the demo walk through them; each phase boundary is a `phase` event. Templates are validated as
strictly as session configs: an unknown field, a phase naming a site that is not defined, or a
site level outside its region is one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from needlelab.clinic.tpd import TpdSettings
from needlelab.config import (
    ConfigError,
    LocalizationConfig,
    format_validation_error,
    read_toml,
)
from needlelab.events import SiteSide
from needlelab.resources import configs_dir

BodyPart = Literal["hand", "foot", "back"]
BODY_PARTS: tuple[BodyPart, ...] = ("hand", "foot", "back")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Strict):
    """A place on the body the session works on: needled, or tested for TPD."""

    name: str = Field(min_length=1, max_length=40)
    region: str = "lumbar"
    level: str
    side: SiteSide
    muscle: str = ""


class LrjSettings(_Strict):
    """The left/right judgement blocks."""

    trials: int = Field(24, ge=4, le=200)
    body_parts: list[BodyPart] = Field(default_factory=lambda: list(BODY_PARTS), min_length=1)
    rotations: list[int] = Field(default_factory=lambda: [0, 90, 180, 270], min_length=1)
    timeout_s: float = Field(5.0, gt=0.3, le=30)
    gap_s: float = Field(0.6, ge=0, le=10)  # blank between trials


class PromptSchedule(_Strict):
    """When to ask the localization question during needling."""

    every_s: float = Field(20.0, gt=1, le=600)
    count: int = Field(6, ge=1, le=100)


class Phase(_Strict):
    """One step of the session."""

    name: str = Field(min_length=1, max_length=60)
    kind: Literal["nrs", "rom", "tpd", "lrj", "needling", "note"]
    when: Literal["pre", "post", "during", ""] = ""
    sites: list[str] = Field(default_factory=list)  # tpd: the sites tested
    site: str | None = None  # needling: the site needled
    estim: bool = False  # needling: with electrical stimulation
    movements: list[str] = Field(default_factory=list)  # rom
    text: str = ""  # note: what the clinician is asked to do

    @model_validator(mode="after")
    def _what_each_kind_needs(self) -> Phase:
        if self.kind == "tpd" and not self.sites:
            raise ValueError(f"phase {self.name!r}: a tpd phase needs 'sites'")
        if self.kind in ("tpd", "lrj") and self.when not in ("pre", "post"):
            raise ValueError(f"phase {self.name!r}: a {self.kind} phase is 'pre' or 'post'")
        if self.kind == "needling" and self.site is None:
            raise ValueError(f"phase {self.name!r}: a needling phase needs 'site'")
        if self.kind == "rom" and not self.movements:
            raise ValueError(f"phase {self.name!r}: a rom phase needs 'movements'")
        return self


class ProtocolInfo(_Strict):
    """The template's name and what it is for."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    description: str = ""
    # A template cut short on purpose (the demo's) says so here, in words a report can print:
    # which template it shortens, what it cut and why. Empty for a full template.
    shortened: str = Field("", max_length=400)


class Protocol(_Strict):
    """A whole session protocol."""

    protocol: ProtocolInfo
    sites: list[Site] = Field(min_length=1)
    tpd: TpdSettings = Field(default_factory=TpdSettings)
    lrj: LrjSettings = Field(default_factory=LrjSettings)
    prompts: PromptSchedule = Field(default_factory=PromptSchedule)
    phases: list[Phase] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_resolve(self) -> Protocol:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        for phase in self.phases:
            for name in [*phase.sites, *([phase.site] if phase.site else [])]:
                if name not in names:
                    raise ValueError(
                        f"phase {phase.name!r} names site {name!r}; defined: {', '.join(names)}"
                    )
        return self

    def site(self, name: str) -> Site:
        """A site by name."""
        return next(s for s in self.sites if s.name == name)

    def check_regions(self, localization: LocalizationConfig, source: str) -> None:
        """Every site's region and level must exist in the session's localization config."""
        problems = []
        for k, site in enumerate(self.sites):
            levels = localization.regions.get(site.region)
            if levels is None:
                problems.append(
                    f"{source}: sites[{k}].region: unknown region {site.region!r}; "
                    f"allowed: {sorted(localization.regions)}"
                )
            elif site.level not in levels:
                problems.append(
                    f"{source}: sites[{k}].level: {site.level!r} is not in region "
                    f"{site.region!r}; allowed: {levels}"
                )
        if problems:
            raise ConfigError(problems)


def protocols_dir() -> Path:
    """Where the shipped protocol templates are."""
    return configs_dir() / "protocols"


def parse_protocol(data: dict[str, Any], source: str = "<protocol>") -> Protocol:
    """Validate an already-parsed template."""
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_protocol(
    name_or_path: str | Path, localization: LocalizationConfig | None = None
) -> Protocol:
    """A template by shipped name (`low-back-l3`) or path, its sites checked against the
    session's regions (the default lumbar region if none given); `ConfigError` if it is bad."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = protocols_dir() / f"{name_or_path}.toml"
    protocol = parse_protocol(read_toml(path), str(path))
    protocol.check_regions(localization or LocalizationConfig(), str(path))
    return protocol
