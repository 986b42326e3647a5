"""The in-distribution domain: a store's customer-support assistant, its intents, phrasings and slot values."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


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
