"""tamis's own shipped categories: objects, backgrounds, splits and spatial pairs.

The lists are written for tamis (not copied from Comp90). The split mirrors the paper's prompt
set: 60 training objects x 8 training backgrounds, 30 evaluation objects x 4 evaluation
backgrounds, disjoint; spatial training and evaluation pairs use disjoint objects.
"""

from __future__ import annotations

import random

from tamis.seeds.prompts import ObjectName

_OBJECT_LINES = """
apple, an apple, apples
banana, a banana, bananas
orange, an orange, oranges
lemon, a lemon, lemons
pear, a pear, pears
peach, a peach, peaches
tomato, a tomato, tomatoes
potato, a potato, potatoes
carrot, a carrot, carrots
onion, an onion, onions
egg, an egg, eggs
donut, a donut, donuts
cupcake, a cupcake, cupcakes
cookie, a cookie, cookies
pretzel, a pretzel, pretzels
croissant, a croissant, croissants
pineapple, a pineapple, pineapples
watermelon, a watermelon, watermelons
strawberry, a strawberry, strawberries
mushroom, a mushroom, mushrooms
dog, a dog, dogs
cat, a cat, cats
horse, a horse, horses
cow, a cow, cows
sheep, a sheep, sheep
pig, a pig, pigs
rabbit, a rabbit, rabbits
duck, a duck, ducks
chicken, a chicken, chickens
goat, a goat, goats
fox, a fox, foxes
deer, a deer, deer
owl, an owl, owls
penguin, a penguin, penguins
frog, a frog, frogs
turtle, a turtle, turtles
elephant, an elephant, elephants
giraffe, a giraffe, giraffes
zebra, a zebra, zebras
lion, a lion, lions
bear, a bear, bears
squirrel, a squirrel, squirrels
parrot, a parrot, parrots
swan, a swan, swans
goldfish, a goldfish, goldfish
butterfly, a butterfly, butterflies
chair, a chair, chairs
table, a table, tables
lamp, a lamp, lamps
clock, a clock, clocks
vase, a vase, vases
cup, a cup, cups
mug, a mug, mugs
bottle, a bottle, bottles
bowl, a bowl, bowls
plate, a plate, plates
spoon, a spoon, spoons
book, a book, books
pencil, a pencil, pencils
candle, a candle, candles
umbrella, an umbrella, umbrellas
backpack, a backpack, backpacks
suitcase, a suitcase, suitcases
hat, a hat, hats
shoe, a shoe, shoes
glove, a glove, gloves
balloon, a balloon, balloons
kite, a kite, kites
ball, a ball, balls
teddy bear, a teddy bear, teddy bears
guitar, a guitar, guitars
drum, a drum, drums
bicycle, a bicycle, bicycles
car, a car, cars
bus, a bus, buses
boat, a boat, boats
airplane, an airplane, airplanes
train, a train, trains
truck, a truck, trucks
tractor, a tractor, tractors
key, a key, keys
television, a television, televisions
laptop, a laptop, laptops
phone, a phone, phones
camera, a camera, cameras
sunflower, a sunflower, sunflowers
rose, a rose, roses
tree, a tree, trees
cactus, a cactus, cacti
pumpkin, a pumpkin, pumpkins
"""

OBJECTS: tuple[ObjectName, ...] = tuple(
    ObjectName.parse(line) for line in _OBJECT_LINES.strip().splitlines()
)

TRAIN_BACKGROUNDS: tuple[str, ...] = (
    "in a quiet fishing village",
    "on a snowy hillside",
    "on a red desert planet",
    "in a green farmland valley",
    "under a golden evening sky",
    "in a foggy pine forest",
    "under the northern lights",
    "on a sandy tropical beach",
)
EVAL_BACKGROUNDS: tuple[str, ...] = (
    "on a plain grey background",
    "under a night sky full of stars",
    "by a calm lake in the hills",
    "in a wildlife documentary photo",
)
BACKGROUNDS: tuple[str, ...] = TRAIN_BACKGROUNDS + EVAL_BACKGROUNDS

SPLIT_SEED = 20241127
N_TRAIN_OBJECTS = 60
N_EVAL_OBJECTS = 30


def split_objects(
    objects: tuple[ObjectName, ...] = OBJECTS,
    n_train: int = N_TRAIN_OBJECTS,
    seed: int = SPLIT_SEED,
) -> tuple[list[ObjectName], list[ObjectName]]:
    """Deterministic disjoint (train, eval) split of ``objects`` (shuffled with ``seed``).

    Raises:
        ValueError: ``n_train`` not strictly between 0 and ``len(objects)``.

    """
    if not 0 < n_train < len(objects):
        raise ValueError(f"n_train must be in 1..{len(objects) - 1}, got {n_train}")
    order = list(objects)
    random.Random(seed).shuffle(order)
    return order[:n_train], order[n_train:]


TRAIN_OBJECTS, EVAL_OBJECTS = split_objects()


def spatial_pairs(
    objects: list[ObjectName], n_pairs: int, seed: int = SPLIT_SEED
) -> list[tuple[ObjectName, ObjectName]]:
    """``n_pairs`` distinct ordered pairs of different objects, drawn deterministically.

    Raises:
        ValueError: fewer than two objects or more pairs than exist.

    """
    n = len(objects)
    if n < 2 or n_pairs > n * (n - 1) or n_pairs < 1:
        raise ValueError(f"cannot draw {n_pairs} distinct pairs from {n} objects")
    rng = random.Random(seed + n_pairs)
    pairs = [(a, b) for a in objects for b in objects if a != b]
    return rng.sample(pairs, n_pairs)


#: Spatial pairs: 80 training pairs over training objects, 40 evaluation pairs over evaluation
#: objects (x 4 relations = 320 and 160 prompts, as in the paper); disjoint by construction.
TRAIN_PAIRS = spatial_pairs(TRAIN_OBJECTS, 80)
EVAL_PAIRS = spatial_pairs(EVAL_OBJECTS, 40)


def object_by_name(name: str) -> ObjectName:
    """The shipped object with this singular or plural name.

    Raises:
        ValueError: unknown object (the message lists a few known ones).

    """
    for obj in OBJECTS:
        if name in (obj.singular, obj.plural):
            return obj
    known = ", ".join(o.singular for o in OBJECTS[:8])
    raise ValueError(f"unknown object {name!r} (known e.g.: {known}, ...)")
