"""Off-topic domains for input-drift tests: cooking, legal, medical, programming, travel."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from workers.synthetic._support import _MONTHS

# --------------------------------------------------------------------------------------
# other domains: questions and plain-text answers
# --------------------------------------------------------------------------------------
_INGREDIENTS = [
    "butter", "eggs", "buttermilk", "heavy cream", "brown sugar", "baking powder",
    "fresh basil", "shallots", "white wine", "soy sauce", "cornstarch", "yeast", "honey",
]  # fmt: skip


_DISHES = [
    "banana bread", "risotto", "lasagna", "chicken curry", "sourdough", "pancakes",
    "beef stew", "apple pie", "pad thai", "chocolate chip cookies", "tomato soup", "paella",
]  # fmt: skip


_DRUGS = [
    "ibuprofen", "acetaminophen", "aspirin", "amoxicillin", "loratadine", "omeprazole",
    "metformin", "sertraline", "cetirizine", "prednisone",
]  # fmt: skip


_CONDITIONS = [
    "type 2 diabetes", "migraine", "strep throat", "high blood pressure", "asthma",
    "a urinary tract infection", "anemia", "Lyme disease", "shingles", "gout",
]  # fmt: skip


_LANGS = ["Python", "JavaScript", "Rust", "Go", "Java", "TypeScript", "C++", "SQL"]


_TASKS = [
    "read a CSV file", "reverse a linked list", "parse JSON", "make an HTTP request",
    "sort a dictionary by value", "handle errors in async code", "write a unit test",
    "remove duplicates from a list", "format a date", "connect to a PostgreSQL database",
]  # fmt: skip


_ERRORS = [
    "a null pointer exception", "an index out of range error", "a borrow checker error",
    "a segmentation fault", "an undefined is not a function error", "a deadlock",
    "a type mismatch error", "a stack overflow",
]  # fmt: skip


_LEGAL = [
    "a month of unpaid rent", "carpet cleaning", "normal wear and tear", "a broken window",
    "an early lease termination",
]  # fmt: skip


_STATES = ["California", "Texas", "New York", "Florida", "Ohio", "Oregon", "Illinois"]


_DESTINATIONS = [
    "Lisbon", "Kyoto", "Reykjavik", "Marrakesh", "Patagonia", "the Amalfi Coast",
    "Vancouver", "Bali", "Prague", "the Scottish Highlands",
]  # fmt: skip


_DOMAINS: dict[str, tuple[list[str], list[str]]] = {
    "cooking": (
        [
            "How long should I roast a {kg} kg chicken at {temp} degrees?",
            "What can I substitute for {ingredient} in {dish}?",
            "Why did my {dish} come out dense and dry?",
            "How do I keep {dish} from getting soggy the next day?",
            "Can I freeze {dish}, and how do I reheat it?",
            "What wine goes well with {dish}?",
            "How do I make {dish} without {ingredient}?",
            "Is it safe to leave cooked {dish} out overnight?",
        ],
        [
            "Roast it at {temp} degrees for about {minutes} minutes per kilogram, until the thickest part of the thigh reaches 74 °C. Let it rest for ten minutes before carving.",
            "You can replace {ingredient} with an equal amount of a similar fat or liquid; in {dish} the texture changes slightly but the flavour holds up.",
            "Dense results usually mean the batter was overmixed or the oven ran cool. Fold the dry ingredients in gently and check the oven with a thermometer.",
            "Cool {dish} completely, wrap it tightly and freeze it for up to three months. Reheat it covered at a low temperature so it does not dry out.",
        ],
    ),
    "legal": (
        [
            "Can my landlord keep my security deposit for {legal}?",
            "Do I need a lawyer to write a will in {state}?",
            "What is the statute of limitations for a breach of contract claim in {state}?",
            "My employer hasn't paid my overtime for {weeks} weeks. What are my options?",
            "Is a verbal agreement legally binding in {state}?",
            "How do I contest a parking ticket I got in {state}?",
            "Can I break my lease early if my landlord refuses to fix the heating?",
            "What happens if I die without a will in {state}?",
        ],
        [
            "In most states a landlord may deduct only for damage beyond normal wear and tear and must itemize the deductions within a set number of days. Check the tenant statutes in {state}.",
            "A will is valid in {state} without a lawyer if it is signed and witnessed as the statute requires, but an attorney helps with complex estates.",
            "Unpaid overtime can be claimed through your state labor department or in court; keep your pay stubs and time records as evidence.",
            "Oral contracts can be enforceable, but some agreements, such as sales of land, must be in writing under the statute of frauds.",
        ],
    ),
    "medical": (
        [
            "Is it safe to take {drug} together with {drug2}?",
            "What are the early symptoms of {condition}?",
            "How much {drug} can a {age}-year-old take in a day?",
            "Should I see a doctor for a fever that has lasted {days} days?",
            "What is the usual treatment for {condition}?",
            "Can {condition} be cured, or only managed?",
            "What side effects should I watch for with {drug}?",
            "Is {condition} contagious?",
        ],
        [
            "{drug} and {drug2} are often taken together, but interactions depend on the dose and your other conditions. Ask a pharmacist before combining them.",
            "Early signs of {condition} can be mild and easy to miss. A clinician can confirm it with a simple test, so book an appointment if symptoms persist.",
            "A fever lasting more than three days, or one above 39.4 °C, should be checked by a doctor, especially with a stiff neck, rash or trouble breathing.",
            "Treatment for {condition} usually combines medication with lifestyle changes, and your doctor will adjust it at follow-up visits.",
        ],
    ),
    "programming": (
        [
            "How do I {task} in {lang}?",
            "Why does my {lang} code throw {error}?",
            "What's the difference between a list and a tuple in {lang}?",
            "How can I speed up a slow loop in {lang}?",
            "What is the idiomatic way to {task} in {lang}?",
            "My {lang} program hits {error} when I {task}. How do I debug it?",
            "Should I use threads or async to {task} in {lang}?",
            "How do I write a function in {lang} that returns two values?",
        ],
        [
            "In {lang}, use the standard library: it already knows how to {task}, and it handles the edge cases. Wrap the call in error handling and add a test for an empty input.",
            "{error} usually means you are accessing something that is not there. Print the value just before the failing line or step through it in a debugger.",
            "Profile first. Most slow loops in {lang} do repeated work that can be hoisted out of the loop or replaced by a vectorized or built-in operation.",
            "For I/O-bound work like network calls, async scales better; for CPU-bound work, use processes or threads depending on the runtime.",
        ],
    ),
    "travel": (
        [
            "What's the best time of year to visit {dest}?",
            "Do I need a visa to travel to {dest} for {days} days?",
            "How many days should I spend in {dest}?",
            "What should I pack for a hiking trip to {dest} in {month}?",
            "Is it cheaper to fly or take the train around {dest}?",
            "What are some local dishes I should try in {dest}?",
            "Is {dest} safe for solo travellers?",
        ],
        [
            "The shoulder seasons are ideal for {dest}: fewer crowds, milder weather and lower prices. {month} can be busy, so book early.",
            "Visa rules depend on your passport. Many visitors can stay up to 90 days without one, but check the official embassy site before booking.",
            "Plan at least {days} days for {dest} to see the main sights without rushing, plus a day trip to the countryside.",
            "Pack layers, waterproof boots and a light rain jacket; the weather in {dest} changes quickly in {month}.",
        ],
    ),
}


#: Every domain :func:`domain_prompts` knows; ``"support"`` is the in-distribution one.
DOMAINS: tuple[str, ...] = ("support", *_DOMAINS)


def _domain_slots(rng: random.Random) -> dict[str, str]:
    drug = rng.choice(_DRUGS)
    return {
        "kg": rng.choice(["1.5", "2", "2.5", "3"]),
        "temp": str(rng.choice([180, 200, 220, 350, 375, 425])),
        "minutes": str(rng.choice([40, 45, 50])),
        "ingredient": rng.choice(_INGREDIENTS),
        "dish": rng.choice(_DISHES),
        "drug": drug,
        "drug2": rng.choice([d for d in _DRUGS if d != drug]),
        "condition": rng.choice(_CONDITIONS),
        "age": str(rng.randint(6, 80)),
        "days": str(rng.randint(3, 14)),
        "weeks": str(rng.randint(2, 10)),
        "lang": rng.choice(_LANGS),
        "task": rng.choice(_TASKS),
        "error": rng.choice(_ERRORS),
        "legal": rng.choice(_LEGAL),
        "state": rng.choice(_STATES),
        "dest": rng.choice(_DESTINATIONS),
        "month": rng.choice(_MONTHS),
    }
