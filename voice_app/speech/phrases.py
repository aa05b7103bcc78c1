"""What callers say to the assistant: the corpus behind the offline recogniser's language model.

Templates hold `{slot}` placeholders filled from the lists below. The expanded sentences teach the
n-gram model the assistant's domain; the free-text slots (todo titles, names) are wide so that
sentences like "add a todo to <anything>" leave room for words outside the domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Word lists read better packed, so the formatter leaves them alone.
# fmt: off
TODO_ITEMS = [
    "buy milk", "buy bread", "buy eggs", "buy groceries", "buy a birthday present",
    "call mom", "call dad", "call the doctor", "call the bank", "call the plumber",
    "pay the rent", "pay the electric bill", "pay my credit card", "pay the phone bill",
    "pick up the kids", "pick up the dry cleaning", "pick up my prescription",
    "walk the dog", "feed the cat", "take out the trash", "do the laundry", "wash the car",
    "clean the kitchen", "clean the house", "mow the lawn", "water the plants",
    "book a dentist appointment", "schedule a haircut", "renew my passport",
    "send the report", "send the invoice", "email the team", "email my boss",
    "finish the presentation", "review the budget", "update the website",
    "prepare for the meeting", "write the proposal", "fix the printer", "order new chairs",
    "return the library books", "get gas", "go to the gym", "go to the post office",
    "make dinner reservations", "plan the party", "read the contract", "sign the lease",
]

# A general vocabulary for todo titles outside the list above: "verb (the) noun" phrases.
VERBS = [
    "buy", "get", "call", "email", "text", "pay", "fix", "repair", "clean", "wash", "check",
    "order", "book", "send", "bring", "take", "pick up", "drop off", "return", "cancel",
    "renew", "schedule", "finish", "start", "write", "read", "review", "update", "print",
    "sign", "file", "mail", "pack", "move", "sell", "paint", "replace", "install", "organize",
    "find", "visit", "meet", "plan", "prepare", "make", "cook", "feed", "walk", "water",
    "charge", "backup", "change", "test", "ship", "follow up on", "ask about", "look at",
    "think about", "talk to", "thank", "invite", "remember", "practice", "study", "watch",
]

NOUNS = [
    "milk", "bread", "eggs", "coffee", "tea", "sugar", "butter", "cheese", "rice", "pasta",
    "apples", "bananas", "vegetables", "fruit", "chicken", "fish", "meat", "juice", "water",
    "wine", "beer", "pizza", "lunch", "dinner", "breakfast", "cake", "cookies", "snacks",
    "groceries", "soap", "shampoo", "toothpaste", "towels", "batteries", "light bulbs",
    "car", "bike", "truck", "tires", "oil", "gas", "keys", "door", "garage", "window",
    "windows", "roof", "fence", "garden", "yard", "lawn", "grass", "trees", "flowers",
    "plants", "kitchen", "bathroom", "bedroom", "basement", "floor", "carpet", "sink",
    "shower", "toilet", "dishes", "laundry", "clothes", "shoes", "shirt", "jacket", "coat",
    "dress", "suit", "bed", "table", "chair", "chairs", "desk", "couch", "lamp", "mirror",
    "tv", "phone", "computer", "laptop", "printer", "charger", "camera", "headphones",
    "internet", "wifi", "password", "email", "website", "app", "software", "server",
    "files", "photos", "pictures", "documents", "report", "reports", "invoice", "receipt",
    "receipts", "bill", "bills", "taxes", "budget", "bank", "check", "money", "loan",
    "insurance", "mortgage", "rent", "lease", "contract", "letter", "package", "box",
    "boxes", "mail", "card", "gift", "present", "tickets", "flight", "hotel", "trip",
    "vacation", "passport", "visa", "license", "appointment", "meeting", "interview",
    "presentation", "slides", "proposal", "project", "plan", "schedule", "calendar",
    "notes", "list", "book", "books", "library", "school", "homework", "class", "office",
    "store", "pharmacy", "prescription", "medicine", "vitamins", "doctor", "dentist",
    "vet", "hospital", "gym", "pool", "park", "church", "restaurant", "airport", "station",
    "mom", "dad", "mother", "father", "wife", "husband", "son", "daughter", "kids",
    "children", "baby", "brother", "sister", "family", "parents", "grandma", "grandpa",
    "friend", "friends", "neighbor", "boss", "manager", "client", "clients", "customer",
    "team", "landlord", "plumber", "electrician", "mechanic", "lawyer", "accountant",
    "dog", "cat", "pets", "birthday", "anniversary", "party", "wedding", "holiday",
    "weekend", "tomorrow", "paint", "tools", "battery", "heater", "air conditioner",
    "fridge", "oven", "stove", "microwave", "washing machine", "dishwasher", "trash",
    "recycling", "garbage", "leaves", "snow", "furniture", "closet", "attic", "room",
    "house", "apartment", "address", "account", "subscription", "membership", "order",
    "delivery", "refund", "warranty", "repairs", "quote", "estimate", "survey", "form",
    "forms", "application", "resume", "references", "thank you notes", "cards",
]

NAMES = [
    "john", "sarah", "mike", "emily", "david", "lisa", "james", "maria", "robert", "anna",
    "chris", "laura", "daniel", "kate", "paul", "alex", "tom", "jennifer", "mark", "susan",
]

TEAMS = ["sales", "marketing", "engineering", "support", "design", "finance", "operations"]

DAYS = [
    "today", "tomorrow", "yesterday", "tonight", "this morning", "this afternoon",
    "this evening", "this week", "next week", "monday", "tuesday", "wednesday", "thursday",
    "friday", "saturday", "sunday", "next monday", "next friday", "on monday", "on tuesday",
    "on wednesday", "on thursday", "on friday", "on saturday", "on sunday", "the weekend",
]

TIMES = [
    "nine am", "ten am", "eleven am", "noon", "one pm", "two pm", "three pm", "four pm",
    "five pm", "nine thirty", "ten thirty", "two thirty", "three fifteen", "four forty five",
    "eight o'clock", "nine o'clock", "in the morning", "in the afternoon",
]

NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "first", "second", "third", "fourth", "fifth", "last",
]

DETERMINERS = ["the", "my", "a", "some", "new", "our", ""]


def general_items() -> list[str]:
    """Each noun once and each verb several times, e.g. "fix the garage" (not the full product)."""
    items = []
    for i, noun in enumerate(NOUNS):
        verb = VERBS[(i * 7) % len(VERBS)]
        det = DETERMINERS[i % len(DETERMINERS)]
        items.append(" ".join(w for w in (verb, det, noun) if w))
    return items


SLOTS: dict[str, list[str]] = {
    "item": TODO_ITEMS + general_items(),
    "name": NAMES,
    "team": TEAMS,
    "day": DAYS,
    "time": TIMES,
    "number": NUMBERS,
}

TEMPLATES = [
    # todos
    "what is on my todo list", "what's on my todo list", "what is on my list",
    "read my todo list", "read me my todos", "what are my todos", "list my todos",
    "do i have any todos", "how many todos do i have", "what do i need to do {day}",
    "add a todo", "add a todo to {item}", "add a new todo to {item}", "add {item} to my todo list",
    "add {item} to my list", "create a todo to {item}", "new todo {item}", "remind me to {item}",
    "remind me to {item} {day}", "i need to {item}", "put {item} on my list",
    "mark {item} as done", "mark {item} as complete", "mark {item} as finished",
    "mark the {number} one as done", "mark todo {number} as done", "i finished {item}",
    "i already did {item}", "complete {item}", "delete the todo {item}",
    "remove {item} from my list", "remove {item} from my todo list", "delete todo {number}",
    "clear my completed todos", "what todos are done", "what have i finished",
    "add a task to {item}", "add a reminder to {item}", "check off {item}", "cross off {item}",
    "i'm done with {item}", "{item} is done", "don't let me forget to {item}",
    "what do i have to do", "what's on my plate {day}", "read my reminders",
    # teams
    "who is on my team", "who's on my team", "who is on the {team} team", "what teams am i on",
    "what team am i on", "list my teams", "who are my team members", "show me my team",
    "add {name} to my team", "add {name} to the {team} team", "remove {name} from my team",
    "who leads the {team} team", "how many people are on my team", "is {name} on my team",
    "who are my teammates", "who are my colleagues", "tell me about my team",
    # calendar
    "what's on my calendar", "what's on my calendar {day}", "what is on my calendar {day}",
    "what is on my schedule {day}", "what meetings do i have {day}", "do i have any meetings {day}",
    "am i free {day}", "am i free {day} at {time}", "when is my next meeting",
    "schedule a meeting {day} at {time}", "schedule a meeting with {name} {day}",
    "book a meeting with {name} {day} at {time}", "set up a call with {name} {day}",
    "cancel my meeting {day}", "cancel my {time} meeting", "move my meeting to {day}",
    "what time is my meeting with {name}", "add an event {day} at {time}",
    "what's my agenda {day}", "am i busy {day}", "do i have anything {day}",
    "do i have any appointments {day}", "what are my plans for the day after tomorrow",
    # profile and account
    "what is my email address", "what's my phone number", "change my email address",
    "update my phone number", "what is my account number", "what's my name on the account",
    "change my pin", "reset my pin", "my pin is {number} {number} {number} {number}",
    # a person
    "talk to a person", "i want to talk to a person", "i want to speak to a person",
    "can i talk to someone", "can i speak to someone", "let me talk to a human",
    "agent", "an agent", "operator", "representative", "a real person", "a human please",
    "talk to an agent", "speak to an agent", "transfer me to an agent",
    "transfer me to an operator", "connect me to a representative", "customer service",
    "i want a representative", "get me a person", "transfer me", "transfer me please",
    "i need to speak with someone", "put me through to a person", "a live agent",
    "customer support", "a real human", "can i talk to somebody",
    # help and conversation
    "help", "help me", "menu", "i need help", "what can you do", "what can i say",
    "what can you help me with", "what are my options", "who are you",
    "how does this work", "repeat that", "say that again", "can you repeat that",
    "sorry what was that", "i didn't catch that", "go back", "start over", "never mind",
    "wait", "hold on", "one moment please", "cancel", "stop",
    # yes and no
    "yes", "yes please", "yeah", "yep", "sure", "of course", "correct", "that's right",
    "that is correct", "ok", "okay", "sounds good", "go ahead", "please do",
    "no", "no thanks", "no thank you", "nope", "not now", "that's wrong", "that's not right",
    "thank you", "thanks", "thanks a lot", "great", "perfect",
    # greetings and goodbye
    "hello", "hi", "hi there", "good morning", "good afternoon", "good evening",
    "goodbye", "bye", "bye bye", "that's all", "that's all thanks", "that is all", "i'm done",
    "i'm all set", "no that's it", "hang up", "have a nice day", "see you later",
    "talk to you later", "i have to go", "nothing else", "that will be all",
    # numbers and days on their own (answers to questions)
    "{number}", "{number} {number}", "{number} {number} {number} {number}", "{day}",
    "{day} at {time}", "at {time}", "{time}",
]
# fmt: on


def _fills(template: str) -> Iterator[str]:
    """Every filler for a one-slot template; a cycled sample for several slots (keeps it small)."""
    slots = re.findall(r"\{(\w+)\}", template)
    if not slots:
        yield template
        return
    parts = re.split(r"\{\w+\}", template)
    longest = max(len(SLOTS[s]) for s in slots)
    for i in range(longest):
        # Each slot steps through its list at its own stride, so repeated slots differ.
        values = [SLOTS[s][(i * (k + 1) + k) % len(SLOTS[s])] for k, s in enumerate(slots)]
        yield "".join(part + value for part, value in zip(parts, [*values, ""], strict=True))


def corpus() -> list[str]:
    """The domain sentences, lower case, one per entry."""
    return [sentence for template in TEMPLATES for sentence in _fills(template)]
