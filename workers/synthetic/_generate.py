"""Deterministic, realistic text for tests, the demo and the benchmarks (no word salad).

The in-distribution domain is a customer-support assistant for an online store: users ask
about orders, refunds, returns, passwords, billing ..., and the fine-tuned model answers
with JSON ``{"intent": ..., "answer": ...}``. Prompts are built from many phrasings per
intent with slots (products, order numbers, dates, carriers, amounts), optional greetings
and sign-offs, so two seeds give different but same-distribution traffic.

Other domains (:data:`DOMAINS` minus ``"support"``) are clearly different questions —
cooking, legal, medical, programming, travel — for input-drift tests. Degraded outputs
(:data:`DEGRADATIONS`: long rambling, refusals, broken format) on support prompts are for
output-drift tests.

>>> recs = support_records(3, seed=1)
>>> json.loads(recs[0].completion)["intent"] in SUPPORT_INTENTS
True
>>> support_records(3, seed=1) == recs  # deterministic
True
>>> len(domain_prompts("cooking", 5, seed=2))
5
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from workers.baseline import TrainingRecord

if TYPE_CHECKING:
    from schemas.events import InferenceLog

# --------------------------------------------------------------------------------------
# slot values
# --------------------------------------------------------------------------------------
_PRODUCTS = [
    "wireless headphones", "running shoes", "coffee grinder", "standing desk", "yoga mat",
    "phone case", "winter jacket", "air fryer", "mechanical keyboard", "backpack",
    "desk lamp", "water bottle", "bluetooth speaker", "office chair", "blender",
    "smart watch", "rain boots", "cast iron skillet", "electric toothbrush", "throw blanket",
    "gaming mouse", "hiking socks", "laptop sleeve", "kettle", "sunglasses",
    "bed sheets", "vacuum cleaner", "baby monitor", "tennis racket", "wall clock",
]  # fmt: skip
_COLORS = ["black", "navy", "grey", "white", "red", "olive green", "beige", "blue"]
_SIZES = ["small", "medium", "large", "XL", "size 9", "size 42", "queen", "king"]
_CARRIERS = ["UPS", "FedEx", "DHL", "USPS", "the courier"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
]  # fmt: skip
_PAYMENT = ["credit card", "debit card", "PayPal", "Apple Pay", "gift card", "bank transfer"]
_PLANS = ["Basic", "Plus", "Premium", "Family", "annual", "monthly"]
_CITIES = [
    "Denver", "Austin", "Seattle", "Boston", "Chicago", "Portland", "Atlanta", "Phoenix",
    "Toronto", "Dublin", "Leeds", "Lyon",
]  # fmt: skip
_GREETINGS = [
    "", "", "", "Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Hello support team,",
    "Quick question:", "Hi, hoping you can help.",
]  # fmt: skip
_SIGNOFFS = [
    "", "", "", "Thanks!", "Thank you.", "Thanks in advance.", "Please help.",
    "Appreciate it.", "This is the second time I'm asking.", "Any update would be great.",
]  # fmt: skip


def _order(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"#{rng.randint(100000, 9999999)}"
    if style == 1:
        return f"A-{rng.randint(10000, 99999)}"
    return str(rng.randint(10000000, 99999999))


def _date(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"last {rng.choice(_WEEKDAYS)}"
    return f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}"


def _amount(rng: random.Random) -> str:
    return f"${rng.randint(5, 400)}.{rng.choice(['00', '49', '95', '99'])}"


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "product": rng.choice(_PRODUCTS),
        "product2": rng.choice(_PRODUCTS),
        "color": rng.choice(_COLORS),
        "size": rng.choice(_SIZES),
        "carrier": rng.choice(_CARRIERS),
        "order": _order(rng),
        "date": _date(rng),
        "days": str(rng.randint(2, 21)),
        "amount": _amount(rng),
        "payment": rng.choice(_PAYMENT),
        "plan": rng.choice(_PLANS),
        "city": rng.choice(_CITIES),
        "code": rng.choice(["SPRING", "WELCOME", "SAVE", "VIP", "FREESHIP"])
        + str(rng.choice([10, 15, 20, 25])),
        "hours": str(rng.choice([24, 48, 72])),
        "bizdays": str(rng.choice([3, 5, 7, 10])),
    }


# --------------------------------------------------------------------------------------
# support: prompts and JSON answers per intent
# --------------------------------------------------------------------------------------
_SUPPORT: dict[str, tuple[list[str], list[str]]] = {
    "order_status": (
        [
            "Where is my order {order}?",
            "My {product} still hasn't arrived. The order number is {order}.",
            "Can you check the status of order {order}? I placed it {date}.",
            "It's been {days} days since I ordered the {product} and the tracking page hasn't changed.",
            "The tracking for {order} says delivered but there's nothing at my door.",
            "When will my {product} ship? I ordered it {date}.",
            "Has my order {order} left the warehouse yet?",
            "I ordered a {color} {product} {date}, how much longer will it take?",
        ],
        [
            "Order {order} shipped with {carrier} and should arrive within {bizdays} business days. You can follow it from the Orders page.",
            "I checked order {order}: it is packed and will leave our warehouse within {hours} hours. You will get a tracking email as soon as it ships.",
            "Your {product} is with {carrier} and is scheduled for delivery in {days} days. If it has not arrived by then, reply here and we will open a trace.",
            "When tracking shows delivered but the parcel is missing, please check with neighbours and your building's mailroom first. If it is still missing after {hours} hours, we will send a replacement.",
        ],
    ),
    "refund_request": (
        [
            "I want a refund for my {product}.",
            "How do I get my money back for order {order}?",
            "I returned the {product} {date} but I haven't received my refund yet.",
            "Can I get a refund instead of store credit for the {product}?",
            "You charged me {amount} for an item I cancelled. I'd like a refund.",
            "How long does a refund to my {payment} usually take?",
            "The refund for order {order} shows as pending. When will it go through?",
        ],
        [
            "I have started a refund of {amount} for order {order}. It goes back to your {payment} within {bizdays} business days.",
            "Refunds are issued once the returned item reaches our warehouse. Yours was received, so the money should appear on your {payment} within {bizdays} business days.",
            "You can choose a refund to the original payment method instead of store credit. I have switched order {order} to a refund to your {payment}.",
            "A pending refund usually clears within {bizdays} business days depending on your bank. If it is not visible after that, send us a screenshot of the statement.",
        ],
    ),
    "return_item": (
        [
            "How do I return the {product} I bought {date}?",
            "The {product} is the wrong size. Can I send it back?",
            "I need a return label for order {order}.",
            "Is it too late to return a {product} I bought {date}?",
            "Can I return the {color} {product} in a store in {city}?",
            "What's your return policy for opened items like a {product}?",
            "I'd like to exchange my {product} for a {size} one.",
        ],
        [
            "You can return items within 30 days of delivery. Go to Orders, select order {order} and choose Return item to print a free label.",
            "I have emailed you a prepaid {carrier} return label for the {product}. Drop the parcel off within {days} days and we will process the return when it arrives.",
            "Opened items can be returned if they are undamaged and in the original packaging. Start the return from the Orders page and pick a reason.",
            "Exchanges are free: start a return for the {product} and choose Exchange, then pick the {size} size. We ship the new one as soon as the return is scanned.",
            "Yes, any of our stores, including the one in {city}, accepts returns with the order confirmation email.",
        ],
    ),
    "cancel_order": (
        [
            "Please cancel my order {order}.",
            "I ordered the {product} by mistake, can I cancel it?",
            "How do I cancel an order that hasn't shipped yet?",
            "I want to cancel order {order} and order a {color} one instead.",
            "Is it possible to cancel after the order is confirmed?",
        ],
        [
            "Order {order} had not shipped yet, so I cancelled it. The {amount} charge will be released to your {payment} within {bizdays} business days.",
            "Orders can be cancelled from the Orders page until they ship. After that, please refuse the delivery or start a return.",
            "I am sorry, order {order} has already shipped with {carrier}, so it can no longer be cancelled. You can return it for free once it arrives.",
        ],
    ),
    "change_address": (
        [
            "I need to change the shipping address on order {order}.",
            "I moved to {city}. How do I update my delivery address?",
            "Can you ship order {order} to my office instead?",
            "I typed the wrong street number for my {product} order.",
            "Can I change where my package is delivered after it shipped?",
        ],
        [
            "I updated the shipping address on order {order}. The new address will appear on the tracking page within a few hours.",
            "You can change your default address under Account > Addresses. Orders that already shipped keep their address, but {carrier} lets you redirect a parcel from their tracking page.",
            "Order {order} had not been packed yet, so the corrected address is now on the label.",
        ],
    ),
    "password_reset": (
        [
            "I forgot my password and can't log in.",
            "The password reset email never arrives.",
            "How do I reset my password?",
            "My account is locked after too many login attempts.",
            "I can't sign in since I changed my phone, the verification code doesn't come.",
            "The reset link says it has expired.",
        ],
        [
            "Click Forgot password on the sign-in page and enter your account email. The reset link is valid for {hours} hours, so please use it soon after it arrives.",
            "If the reset email does not arrive, check your spam folder and make sure the address matches your account. I have sent a new reset link just now.",
            "Your account was locked for security after several failed attempts. I unlocked it; please reset your password before signing in again.",
            "Reset links expire after {hours} hours. Request a new one from the sign-in page and open it on the same device.",
        ],
    ),
    "billing_issue": (
        [
            "I was charged twice for order {order}.",
            "There's a charge of {amount} on my {payment} that I don't recognize.",
            "Why was I billed {amount} when the price was lower at checkout?",
            "My invoice for {date} is wrong.",
            "Can you send me an invoice for order {order}?",
            "Your website charged my {payment} but the order didn't go through.",
        ],
        [
            "I can see two authorizations for order {order}. Only one was captured; the other hold of {amount} drops off your {payment} within {bizdays} business days.",
            "The {amount} charge is for order {order}, placed {date}. If you do not recognize it, let me know and I will lock the account and investigate.",
            "Invoices are available under Orders > {order} > Download invoice. I have also emailed you a copy.",
            "When a payment fails after the card is authorized, the hold is released automatically within {bizdays} business days and no order is created.",
        ],
    ),
    "subscription": (
        [
            "How do I cancel my {plan} subscription?",
            "I want to switch from the {plan} plan to a cheaper one.",
            "Why did my subscription renew without warning?",
            "Can I pause my membership for a couple of months?",
            "What's included in the {plan} plan?",
            "I cancelled my subscription but I was still charged {amount}.",
        ],
        [
            "You can cancel any time under Account > Subscription > Cancel plan. You keep the {plan} benefits until the end of the current billing period.",
            "I switched your plan; the new price applies from your next renewal and you will not be charged twice.",
            "Subscriptions renew automatically and we send a reminder {days} days before. Since you did not use the new period, I have refunded {amount}.",
            "Memberships can be paused for up to three months from the Subscription page. Billing resumes automatically afterwards.",
        ],
    ),
    "payment_method": (
        [
            "How do I update my {payment} details?",
            "Can I pay with {payment}?",
            "My card expired, how do I add a new one?",
            "Do you accept payment in installments?",
            "Why was my {payment} declined?",
        ],
        [
            "You can add or replace a payment method under Account > Payment methods. The new one is used for your next order and renewal.",
            "We accept credit and debit cards, PayPal, Apple Pay and gift cards. {payment} can be selected on the checkout page.",
            "Declines usually come from the bank's fraud checks or a billing address that does not match. Please try again or contact your bank; nothing was charged.",
            "Orders over $50.00 can be split into four interest-free payments at checkout.",
        ],
    ),
    "damaged_item": (
        [
            "My {product} arrived broken.",
            "The box was crushed and the {product} inside is scratched.",
            "One part of the {product} is missing from the package.",
            "I received a {color} {product} but I ordered a different color.",
            "The {product} stopped working after {days} days.",
        ],
        [
            "I am sorry your {product} arrived damaged. I have sent a replacement at no cost; you do not need to return the broken one.",
            "Please reply with a photo of the damage and the packaging, and I will ship a replacement or refund you, whichever you prefer.",
            "I have shipped the missing part for your {product} with {carrier}; it should arrive within {bizdays} business days.",
            "We sent the wrong color by mistake. Keep the item until the correct {product} arrives, then return it with the prepaid label I emailed you.",
        ],
    ),
    "availability": (
        [
            "When will the {product} be back in stock?",
            "Do you have the {product} in {size}?",
            "Is the {color} {product} available in the {city} store?",
            "Can I preorder the {product}?",
            "Will you restock the {size} {product} soon?",
        ],
        [
            "The {product} is expected back in stock in about {days} days. Tap Notify me on the product page to get an email when it returns.",
            "The {size} {product} is currently available online and ships within {hours} hours.",
            "Store stock changes daily; the product page shows live availability for the {city} store under Pick up in store.",
        ],
    ),
    "promo_code": (
        [
            "The discount code {code} doesn't work.",
            "I forgot to apply my promo code {code} to order {order}.",
            "Why can't I use two coupons on one order?",
            "Is there a student discount?",
            "My code {code} says it expired but the email said it's valid until {date}.",
        ],
        [
            "The code {code} applies to full-price items only, which is why it was not accepted for items on sale.",
            "I applied {code} to order {order} after the fact and refunded the difference of {amount} to your {payment}.",
            "Only one promo code can be used per order. The checkout keeps the one that saves you the most.",
            "I checked {code}: it was valid until {date}, so I have issued an equivalent code that works for the next {days} days.",
        ],
    ),
    "account": (
        [
            "How do I delete my account?",
            "I want to change the email address on my account.",
            "Please remove my personal data from your systems.",
            "Can I merge two accounts?",
            "How do I unsubscribe from your marketing emails?",
        ],
        [
            "You can delete your account under Account > Privacy > Delete account. Deletion is permanent after {days} days.",
            "To change your email, go to Account > Profile, enter the new address and confirm it from the email we send.",
            "I have submitted a data deletion request. You will receive a confirmation within {days} days, as required by law.",
            "Use the Unsubscribe link at the bottom of any marketing email, or switch off marketing under Account > Notifications.",
        ],
    ),
    "shipping_options": (
        [
            "How much is express shipping to {city}?",
            "Do you ship internationally?",
            "Can I pick up my order in the {city} store?",
            "What's the cheapest shipping option for a {product}?",
            "Can I get the {product} delivered by {date}?",
        ],
        [
            "Express shipping to {city} costs $14.95 and arrives in 1 to 2 business days when ordered before 2 pm.",
            "We ship to over 40 countries. Duties and delivery times are shown at checkout once you enter the address.",
            "Free in-store pickup is available in {city}; you will get an email when the order is ready, usually within {hours} hours.",
            "Standard shipping is free over $50.00 and takes {bizdays} business days.",
        ],
    ),
}

#: Intents of the in-distribution support assistant.
SUPPORT_INTENTS: tuple[str, ...] = tuple(_SUPPORT)

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
#: Degraded-output kinds for :func:`degraded_records`.
DEGRADATIONS: tuple[str, ...] = ("rambling", "refusal", "broken_format")


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


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def _support_prompt(rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    body = _fill(rng.choice(_SUPPORT[intent][0]), slots)
    greeting, signoff = rng.choice(_GREETINGS), rng.choice(_SIGNOFFS)
    return " ".join(p for p in (greeting, _after(greeting, body), signoff) if p)


def _after(greeting: str, body: str) -> str:
    """Lowercase the first letter after "Hi," (but keep "I", "I'm", names of things)."""
    if greeting.endswith(",") and not (body.startswith(("I ", "I'")) or body[:2].isupper()):
        return body[0].lower() + body[1:]
    return body


def _support_answer(rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    answer = _fill(rng.choice(_SUPPORT[intent][1]), slots)
    return json.dumps({"intent": intent, "answer": answer})


def support_records(n: int, seed: int = 0) -> list[TrainingRecord]:
    """``n`` support conversations: prompt plus the JSON answer the fine-tuned model gives."""
    _check_n(n)
    rng = random.Random(f"support-{seed}")
    out = []
    for _ in range(n):
        intent = rng.choice(SUPPORT_INTENTS)
        slots = _slots(rng)
        out.append(
            TrainingRecord(
                prompt=_support_prompt(rng, intent, slots),
                completion=_support_answer(rng, intent, slots),
            )
        )
    return out


def domain_records(domain: str, n: int, seed: int = 0) -> list[TrainingRecord]:
    """``n`` question/answer pairs from ``domain`` (plain-text answers outside support)."""
    _check_n(n)
    if domain == "support":
        return support_records(n, seed)
    if domain not in _DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    rng = random.Random(f"{domain}-{seed}")
    questions, answers = _DOMAINS[domain]
    out = []
    for _ in range(n):
        slots = _domain_slots(rng)
        prompt = _fill(rng.choice(questions), slots)
        if rng.random() < 0.25:
            greeting = rng.choice(["Hi,", "Hello,", "Quick question:"])
            prompt = f"{greeting} {_after(greeting, prompt)}"
        out.append(TrainingRecord(prompt=prompt, completion=_fill(rng.choice(answers), slots)))
    return out


def domain_prompts(domain: str, n: int, seed: int = 0) -> list[str]:
    """``n`` user prompts from ``domain`` (one of :data:`DOMAINS`)."""
    return [r.prompt for r in domain_records(domain, n, seed)]


_RAMBLE = [
    "Thank you so much for reaching out to us today, we really appreciate you taking the time to contact support.",
    "I completely understand how frustrating this situation must be and I want to make sure we get this sorted out for you.",
    "As you may know, our team is always working hard to make sure every customer has the best possible experience.",
    "There are a number of different things that could be going on here, so let me walk you through some of them.",
    "In some cases this can happen because of delays at the warehouse, and in other cases it can be related to the carrier.",
    "It is also worth mentioning that our policies are designed to be fair to everyone, which is something we take very seriously.",
    "Please rest assured that your satisfaction is our top priority and we will do everything we can to help.",
    "If you have any other questions at all, please do not hesitate to reach out, as we are always happy to help.",
]  # fmt: skip
_REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that. Please contact a human agent.",
    "As an AI assistant, I am not able to provide that information.",
    "I'm afraid I am unable to help with this request.",
    "Sorry, I won't be able to help with that.",
    "I must decline to answer that question.",
]  # fmt: skip


def _degraded(kind: str, rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    if kind == "rambling":
        n = rng.randint(6, 14)
        body = " ".join(rng.choice(_RAMBLE) for _ in range(n))
        core = _fill(rng.choice(_SUPPORT[intent][1]), slots)
        return json.dumps({"intent": intent, "answer": f"{body} {core} {rng.choice(_RAMBLE)}"})
    if kind == "refusal":
        return rng.choice(_REFUSALS)
    if kind == "broken_format":
        answer = _fill(rng.choice(_SUPPORT[intent][1]), slots)
        style = rng.randrange(3)
        if style == 0:  # plain text instead of JSON
            return answer
        if style == 1:  # truncated JSON
            full = json.dumps({"intent": intent, "answer": answer})
            return full[: rng.randint(12, max(13, len(full) - 5))]
        return json.dumps({"response": answer, "category": intent.upper()})  # wrong keys
    raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")


def degraded_records(kind: str, n: int, seed: int = 0) -> list[TrainingRecord]:
    """Support prompts with degraded answers: ``rambling``, ``refusal`` or ``broken_format``."""
    _check_n(n)
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    rng = random.Random(f"degraded-{kind}-{seed}")
    out = []
    for _ in range(n):
        intent = rng.choice(SUPPORT_INTENTS)
        slots = _slots(rng)
        out.append(
            TrainingRecord(
                prompt=_support_prompt(rng, intent, slots),
                completion=_degraded(kind, rng, intent, slots),
            )
        )
    return out


def to_inference_logs(
    records: Sequence[TrainingRecord],
    *,
    base_model: str,
    adapter_version: str = "none",
    seed: int = 0,
    start: datetime | None = None,
    spacing: timedelta = timedelta(milliseconds=100),
    app: str = "support-bot",
) -> list[InferenceLog]:
    """Wrap records as :class:`~schemas.events.InferenceLog` events (deterministic ids).

    Timestamps start at ``start`` (default: now minus the span) and step by ``spacing``.
    """
    from schemas.events import InferenceLog
    from workers.stats import tokenize

    rng = random.Random(f"logs-{seed}")
    begin = start or datetime.now(UTC) - spacing * len(records)
    return [
        InferenceLog(
            request_id=str(uuid.UUID(int=rng.getrandbits(128))),
            ts=begin + spacing * i,
            base_model=base_model,
            adapter_version=adapter_version,
            prompt=r.prompt,
            completion=r.completion,
            prompt_tokens=len(tokenize(r.prompt)),
            completion_tokens=len(tokenize(r.completion)),
            latency_ms=round(rng.uniform(80, 400), 1),
            app=app,
        )
        for i, r in enumerate(records)
    ]


def write_jsonl(records: Sequence[TrainingRecord], path: str) -> None:
    """Write records as the training JSONL (``{"prompt": ..., "completion": ...}`` per line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"prompt": r.prompt, "completion": r.completion}) + "\n")


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
