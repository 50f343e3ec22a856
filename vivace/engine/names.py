"""Readable flow run names such as ``brisk-heron``."""

from __future__ import annotations

import random

_ADJECTIVES = (
    "amber agile azure bold brisk calm clever crimson daring eager fancy fearless gentle golden "
    "hardy jolly keen lively lucky mellow merry nimble noble olive placid proud quick quiet rapid "
    "rustic sandy scarlet shiny silver smart snowy steady sunny swift tidy vivid warm witty zesty"
).split()
_ANIMALS = (
    "alpaca badger beaver bison camel cheetah condor corgi coyote crane dingo dolphin eagle falcon "
    "ferret finch gazelle gecko heron ibex jackal koala lemur lynx marten mole newt ocelot otter "
    "panda parrot pelican puffin quail raven salmon seal stork tapir toucan walrus wombat yak zebra"
).split()


def random_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_ANIMALS)}"
