"""Which provider route serves a job: the request's `provider`, else the model's configured default.

A route is a kind of provider darkroom can call: `openai` (OpenAI's Images API or any gateway with its schema,
answering with the images) or `wavespeed` (WaveSpeedAI, which takes the job and must be polled). What each route
serves and accepts is fact, kept here; which route a model uses by default is configuration (`PROVIDER_ROUTES`,
from the template's `ProviderRoutes`), so an operator moves a model between providers without a release.

A job's route is decided once, when it is accepted, and kept on the job: a configuration change never moves a job
that is already under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from darkroom import catalog
from darkroom.errors import FieldError

DEFAULT_ROUTE = "openai"


@dataclass(frozen=True)
class Route:
    name: str
    # Submit, then poll (through the poller state machine), instead of one call that answers with the images.
    asynchronous: bool
    # The catalog models this route serves; None for all of them.
    models: tuple[str, ...] | None = None
    # Request fields the route has no way to honour, when set to anything but the value given here.
    only_defaults: tuple[tuple[str, object], ...] = ()
    # USD per image the provider lists, for routes that report no token usage to price from.
    price_per_image: Decimal | None = None

    def serves(self, model: str) -> bool:
        return model in catalog.MODELS and (self.models is None or model in self.models)


ROUTES: dict[str, Route] = {
    "openai": Route("openai", asynchronous=False),
    # WaveSpeed's gpt-image-2 takes prompt, size, quality and output_format, and renders one image per submission.
    "wavespeed": Route(
        "wavespeed",
        asynchronous=True,
        models=("gpt-image-2",),
        only_defaults=(
            ("n", 1),
            ("output_compression", None),
            ("moderation", "auto"),
            ("complexity", None),
            # Its edit endpoint takes images by URL, and no mask or markup.
            ("mask", None),
            ("markup", None),
        ),
        price_per_image=Decimal("0.06"),  # WaveSpeed's listed price for gpt-image-2, "from $0.06 per run"
    ),
}


@dataclass(frozen=True)
class RouteConfig:
    """A deployment's routes: which may be used at all (`ENABLED_PROVIDER_ROUTES`), and each model's default
    ({model or "*": route}, from `PROVIDER_ROUTES`)."""

    enabled: frozenset[str] = frozenset({DEFAULT_ROUTE})
    defaults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, enabled: str, defaults: str) -> RouteConfig:
        """From "openai,wavespeed" and "gpt-image-2=wavespeed,*=openai". Names of routes darkroom does not have are
        left out (the template's AllowedPatterns refuse them before they deploy); openai is always enabled."""
        names = {name.strip() for name in enabled.split(",")} & set(ROUTES)
        pairs: dict[str, str] = {}
        for entry in defaults.split(","):
            model, _, route = (part.strip() for part in entry.partition("="))
            if model and route in ROUTES:
                pairs.setdefault(model, route)
        return cls(frozenset(names | {DEFAULT_ROUTE}), pairs)

    def usable(self, route: str, model: str) -> bool:
        return route in self.enabled and ROUTES[route].serves(model)


def default_route(model: str, config: RouteConfig) -> str:
    """The model's own entry, else `*`, else openai; an entry whose route is disabled or does not serve the model is
    passed over, so `*=wavespeed` sends what WaveSpeed serves there and everything else to openai."""
    for key in (model, "*"):
        name = config.defaults.get(key)
        if name and config.usable(name, model):
            return name
    return DEFAULT_ROUTE


def route_for(model: str, requested: str | None, config: RouteConfig) -> str:
    """The route a valid request runs on (`route_errors` found nothing wrong with it)."""
    return requested if requested is not None else default_route(model, config)


def route_errors(fields: dict[str, object], requested: str | None, config: RouteConfig) -> list[FieldError]:
    """What the chosen route cannot do with this request, each naming its field. `fields` holds the request's
    values by name; a model the catalog does not know is reported elsewhere."""
    model = str(fields.get("model", ""))
    if model not in catalog.MODELS:
        return []
    if requested is not None and requested not in ROUTES:
        return [
            FieldError(
                "provider", "provider_unknown", f"Unknown provider '{requested}'. Known: {', '.join(sorted(ROUTES))}."
            )
        ]
    if requested is not None and requested not in config.enabled:
        enabled = ", ".join(sorted(config.enabled))
        return [
            FieldError(
                "provider", "provider_disabled", f"Provider '{requested}' is not enabled here; enabled: {enabled}."
            )
        ]
    route = ROUTES[route_for(model, requested, config)]
    if not route.serves(model):
        served = ", ".join(route.models or ())
        return [
            FieldError(
                "provider",
                "provider_model_not_served",
                f"Provider '{route.name}' does not serve {model}; it serves {served}.",
            )
        ]
    return [
        FieldError(name, "provider_not_supported", f"Provider '{route.name}' cannot honour {name}; leave it out.")
        if default is None
        else FieldError(name, "provider_not_supported", f"Provider '{route.name}' only takes {name}={default}.")
        for name, default in route.only_defaults
        if fields.get(name, default) != default
    ]
