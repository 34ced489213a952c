#!/usr/bin/env python3
"""Generate the default slmake dataset: IT-support ticket triage.

Each record is ``{"ticket": <free text>, "response": <JSON string>}`` where the response is
``{"category": ..., "priority": ..., "action": ...}``.  The data is synthetic but shaped like a
real helpdesk queue: imbalanced categories, noisy wording (typos, lowercase, shouting,
greetings, signatures), and labels that follow cues a model can learn:

* priority = scenario base level, +1 when a team/floor is affected, +1 for a deadline or an
  executive, -1 for "no rush"/cosmetic, clamped to low..high; a company-wide outage is
  ``critical`` and ``escalate``.
* security incidents (phishing clicked, ransomware, lost laptop, breach) are ``escalate`` with a
  fixed priority; non-IT or policy-violating asks are ``refuse`` with priority ``low`` even when
  they shout "URGENT" (a deliberate distractor).
* some cases are hard on purpose: a "printer" ticket that is really a network outage, mixed
  signals ("no rush" + "whole floor"), phishing reported vs. phishing clicked.

About 1 % of the records are exact duplicates, inserted on purpose so curation has something
to drop.  Only the standard library is used and every choice comes from one
``random.Random(seed)`` walking fixed-order lists, so the output is byte-identical for a given
seed on any machine and any PYTHONHASHSEED:

    python data/generate_it_tickets.py            # --seed 0 --n 2000 --out data/it_tickets/tickets.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from random import Random

LEVELS = ["low", "medium", "high", "critical"]

# --------------------------------------------------------------------------------------------
# Slot values.  Templates reference them as {slot}; each occurrence is filled independently.
# --------------------------------------------------------------------------------------------
SLOTS: dict[str, list[str]] = {
    "first": ["Priya", "José", "Zoë", "Mehmet", "Aiko", "Björn", "Fatima", "Liam", "Chen", "Olusegun",
              "Sofia", "Marek", "Ana", "Noah", "Grace", "Dmitri", "Hannah", "Kwame", "Lucía", "Raj",
              "Elif", "Tomás", "Ingrid", "Yusuf", "Mia", "Sean", "Keiko", "Pedro", "Amara", "Lars"],
    "last": ["Müller", "Okafor", "Tanaka", "Novak", "García", "Smith", "Kowalski", "Andersson",
             "Haddad", "O'Brien", "Patel", "Nguyen", "Rossi", "Dubois", "Silva", "Johansson"],
    "colleague": ["Sarah", "my manager", "Tom from Sales", "Ingrid", "my colleague Raj", "the intern",
                  "Mark (he's on leave)", "Alice in Finance"],
    "dept": ["Finance", "HR", "Sales", "Marketing", "Legal", "Engineering", "Customer Support",
             "Logistics", "Procurement", "R&D", "Payroll", "Facilities"],
    "location": ["Building B", "the 3rd floor", "the 5th floor", "the Berlin office", "the São Paulo office",
                 "the warehouse", "reception", "the Leeds site", "the Austin office", "meeting room Orion",
                 "the east wing", "the training centre", "the 2nd floor kitchen area", "the Lyon branch"],
    "floor": ["the whole 4th floor", "everyone on the 2nd floor", "the entire east wing",
              "all of Building C", "the whole call centre", "everybody in the Leeds site"],
    "laptop": ["Dell Latitude 7440", "ThinkPad T14", "MacBook Pro", "HP EliteBook 840", "Surface Pro 9",
               "laptop", "work laptop", "Lenovo X1 Carbon", "Dell XPS 13"],
    "since": ["since this morning", "since about 9am", "for two days now", "since lunch",
              "since the update last night", "since Monday", "since I came back from holiday",
              "for the last hour", "on and off all week", "since I moved desks"],
    "app": ["Excel", "Word", "Teams", "Zoom", "SAP GUI", "Salesforce", "Jira", "Slack", "Adobe Acrobat",
            "AutoCAD", "Tableau", "QuickBooks", "Visual Studio Code", "PowerPoint", "Chrome", "OneDrive"],
    "biz_app": ["SAP", "Salesforce", "the HR portal", "Workday", "the CRM", "ServiceNow", "the intranet",
                "the order system", "NetSuite", "the expense tool"],
    "sw_install": ["Visio", "Python 3.12", "Power BI Desktop", "Notepad++", "7-Zip", "Adobe Illustrator",
                   "Git", "Snagit", "MATLAB", "R and RStudio", "Microsoft Project", "Postman", "DBeaver"],
    "paid_sw": ["Photoshop", "AutoCAD", "Microsoft Office", "Final Cut Pro", "MATLAB", "Windows 11 Pro"],
    "game": ["Steam", "Fortnite", "Minecraft", "World of Warcraft", "FIFA"],
    "file": ["the Q3 forecast workbook", "any PDF", "large spreadsheets", "files from SharePoint",
             "the budget file", "attachments from email", "drawings from the shared drive"],
    "vpn": ["GlobalProtect", "Cisco AnyConnect", "FortiClient", "the VPN client", "the VPN"],
    "vpn_err": ["Gateway not responding", "Authentication failed", "The VPN connection was terminated",
                "Error 809", "Unable to establish a secure connection", "certificate validation failure"],
    "net_err": ["ERR_CONNECTION_TIMED_OUT", "DNS_PROBE_FINISHED_NXDOMAIN", "ERR_NAME_NOT_RESOLVED",
                "'no internet, secured'", "a 'limited connectivity' warning", "ERR_NETWORK_CHANGED"],
    "http_err": ["HTTP 503", "a 502 Bad Gateway", "'service unavailable'", "HTTP 500", "a blank white page",
                 "a gateway timeout"],
    "boot_err": ["0xc000021a", "INACCESSIBLE_BOOT_DEVICE", "CRITICAL_PROCESS_DIED", "0xc0000225",
                 "'No bootable device'", "MEMORY_MANAGEMENT"],
    "upd_err": ["0x80070005", "0x800f081f", "0x80240034", "1603", "0x8024a105"],
    "smtp_err": ["550 5.1.1", "554 5.7.1", "'mailbox unavailable'", "550 5.7.606", "'message size exceeds limit'"],
    "share": ["the S: drive", "\\\\fs01\\finance", "the Projects share", "the H: drive", "the team SharePoint",
              "\\\\nas02\\design", "the shared drive"],
    "printer": ["the HP LaserJet M507", "the Xerox VersaLink C405", "the Canon imageRUNNER", "PRN-3F-01",
                "the big Ricoh by the lifts", "the Brother in reception", "the colour printer", "the printer"],
    "mailbox": ["invoices@", "support@", "hr-queries@", "the Sales shared mailbox", "recruitment@", "orders@"],
    "domain": ["our supplier in Poland", "a customer at gmail.com", "everyone at acme-logistics.com",
               "the auditors", "external addresses"],
    "fake_sender": ["Microsoft 365", "DHL", "the CEO", "Payroll", "DocuSign", "IT Support", "our bank",
                    "Amazon Business"],
    "country": ["Russia", "Nigeria", "Brazil", "Vietnam", "an unknown location", "the Netherlands"],
    "city": ["Madrid", "Chicago", "Singapore", "Munich", "Toronto", "Dubai", "Oslo"],
    "day": ["Monday", "next Tuesday", "the 1st", "tomorrow", "next week", "Thursday"],
    "desk": ["4.17", "B-212", "3-045", "W12", "the hot desk by the window", "D-07"],
    "room": ["Orion", "Atlas", "Boardroom 1", "Lovelace", "Room 4.02", "Kepler"],
    "k": ["5", "8", "10", "12", "15", "20", "30", "40"],
    "pct": ["0", "27", "45", "89", "99", "100"],
    "minutes": ["10", "15", "20", "30", "45"],
    "purpose": ["a client project", "reporting", "my new role", "the data migration", "diagrams", "the audit"],
}

GREETINGS = ["Hi,", "Hello IT,", "Hi team,", "Hey,", "Good morning,", "Hi helpdesk,", "Dear IT Support,",
             "hi there", "Hello,", "Morning all,", "Hi guys,", "Good afternoon,", "Hallo,"]
SIGNATURES = ["Thanks,\n{first}", "Regards, {first} {last}", "Cheers, {first}", "- {first} ({dept})",
              "Thank you!", "Best,\n{first} {last}\n{dept}", "Sent from my iPhone", "Thx", "Many thanks, {first}",
              "{first} {last} | {dept}"]
DETAILS = ["I already restarted twice.", "I tried turning it off and on again.", "Sorry for typos, on my phone.",
           "Screenshot attached.", "Not sure if this is the right place to ask.", "Nothing changed on my side.",
           "A colleague said to raise a ticket.", "Restarting didn't help.", "I'm working from home today.",
           "Asset tag is on the bottom, I can send it."]

# Cue sentences that move the priority (see module docstring).
SCOPE_TEAM = ["My whole team ({k} people) has the same problem.", "{floor} is affected, not just me.",
              "The whole {dept} department is seeing this.", "About {k} of us in {location} can't work.",
              "Everyone around me has the same issue.", "It's happening to the whole {dept} team."]
SCOPE_ORG = ["It's the entire company, every site.", "Nobody in any office can work right now.",
             "This is affecting every user in the company.", "All sites are down, including the warehouse.",
             "Every office is reporting the same thing."]
URGENT_HOT = ["I have a client presentation in {minutes} minutes.", "Payroll has to go out by 5pm today.",
              "This is for our CEO.", "Our CFO needs this before the board meeting.",
              "The quarterly filing deadline is today.", "I'm presenting to the board this afternoon.",
              "A customer audit starts in an hour.", "Our VP is waiting on this."]
URGENT_COOL = ["No rush, whenever you get a chance.", "Not urgent at all.", "It's purely cosmetic but annoying.",
               "Low priority, just flagging it.", "Whenever someone has time.", "No hurry, I can work around it."]
ESCALATE_HEDGE = ["Probably nothing, but wanted to flag it.", "Not sure how serious this is.",
                  "Sorry if this is a silly question.", "Please let me know what to do."]


class Scenario:
    """One kind of ticket: its fixed labels, how often it occurs, and the wording it comes in."""

    def __init__(self, category, action, base, weight, templates, scope=False, org=False,
                 urgency=True):
        self.category, self.action, self.base, self.weight = category, action, base, weight
        self.templates = templates
        self.scope = scope      # team/floor cues apply (+1)
        self.org = org          # a company-wide version exists -> critical + escalate
        self.urgency = urgency  # deadline/executive (+1) and "no rush" (-1) cues apply


R, E, X = "resolve", "escalate", "refuse"
SCENARIOS = [
    # ---------------- network ----------------
    Scenario("network", R, "medium", 30, [
        "My wifi keeps dropping every few minutes in {location}.",
        "Wi-Fi on my {laptop} disconnects from Corp-WiFi constantly {since}.",
        "can't stay connected to the wireless, it drops out every 10 min",
        "The wireless signal in {location} is really weak and video calls keep freezing.",
        "Laptop says 'connected, no internet' on Corp-WiFi {since}.",
        "wifi is unusable near {location}, keeps saying authenticating..."], scope=True),
    Scenario("network", R, "medium", 34, [
        "{vpn} won't connect from home, it just says {vpn_err}.",
        "I can't connect to the VPN {since}. Error: {vpn_err}.",
        "VPN connects but then drops after a couple of minutes.",
        "vpn keeps timing out when i try to log in from the hotel",
        "{vpn} shows {vpn_err} every time. I'm remote today and can't reach anything internal."],
        scope=True, org=True),
    Scenario("network", R, "high", 26, [
        "No internet at all in {location}.",
        "Websites won't load, I get {net_err} on everything.",
        "The network is down in {location}. Nothing loads.",
        "Can't reach any internal sites, {net_err}.",
        "Ethernet at my desk is dead and wifi shows {net_err}."], scope=True, org=True),
    Scenario("network", R, "medium", 22, [
        "I can't access {share}. It says the network path was not found.",
        "Mapped drive {share} disappeared after a reboot.",
        "Opening files from {share} is extremely slow today.",
        "Access to {share} keeps timing out {since}."], scope=True, org=True),
    Scenario("network", R, "low", 12, [
        "Internet is a bit slow this afternoon.",
        "Downloads are crawling on the guest network.",
        "Teams calls are a little choppy, looks like network lag.",
        "Pages take a few seconds longer to load than usual {since}."], scope=True),
    Scenario("network", R, "low", 12, [
        "Could you activate the network port at desk {desk}? I'm moving there {day}.",
        "Please set up a wired connection for the new desk in {location}.",
        "Request: guest wifi access for visitors on {day}.",
        "Can we get a wifi access point added in {location}? Coverage is patchy."]),
    # hard case: looks like printing, really a network outage
    Scenario("network", R, "medium", 10, [
        "Can't print to {printer}, and actually I can't open the intranet or {share} either.",
        "Printer says offline, but so does everything else: Outlook disconnected and no websites.",
        "Thought the printer was broken but nothing on the network works from my desk, {net_err}."],
        scope=True),
    # ---------------- hardware ----------------
    Scenario("hardware", R, "high", 22, [
        "My {laptop} won't turn on at all, no lights.",
        "Laptop stuck on a black screen with error {boot_err}.",
        "Blue screen {boot_err} every time I boot.",
        "{laptop} boots to {boot_err} and restarts in a loop.",
        "pc dead. pressed power button, nothing happens"]),
    Scenario("hardware", R, "medium", 22, [
        "My monitor keeps flickering {since}.",
        "External monitor not detected when I dock my {laptop}.",
        "There's a line of dead pixels across my screen.",
        "Docking station stopped charging my {laptop}.",
        "Second screen goes black randomly, the cable looks fine."]),
    Scenario("hardware", R, "low", 20, [
        "My mouse stopped working, probably the battery.",
        "Two keys on my keyboard are missing.",
        "Headset mic doesn't work in Teams, people can't hear me.",
        "Webcam just shows a black image.",
        "The mouse wheel on my wireless mouse is sticky.",
        "My keyboard's spacebar squeaks."]),
    Scenario("hardware", R, "medium", 14, [
        "Battery on my {laptop} drains in about an hour.",
        "Laptop gets really hot and shuts itself down.",
        "My charger is broken, the cable is frayed near the plug.",
        "The fan on my {laptop} is extremely loud {since}."]),
    Scenario("hardware", R, "low", 20, [
        "Could I get a second monitor for my desk?",
        "Requesting a docking station for my {laptop}.",
        "I'd like an ergonomic keyboard and mouse please.",
        "New starter {first} {last} needs a laptop for {day}.",
        "Can I swap my {laptop} for one with more RAM? It's old."]),
    Scenario("hardware", R, "medium", 12, [
        "My company phone's screen is cracked.",
        "Work mobile won't charge any more.",
        "Company iPhone keeps restarting {since}.",
        "Dropped my work phone, touchscreen only half works."]),
    # ---------------- software ----------------
    Scenario("software", R, "medium", 48, [
        "{app} crashes whenever I open {file}.",
        "{app} freezes and shows 'Not Responding' {since}.",
        "After the update last night, {app} closes on startup.",
        "{app} won't start, it flashes and disappears.",
        "Getting an error in {app}: 'an unexpected error occurred'.",
        "{app} keeps crashing when I try to save."], scope=True),
    Scenario("software", R, "low", 44, [
        "Please install {sw_install} on my laptop.",
        "Can I get {sw_install}? I need it for {purpose}.",
        "Need a licence for {sw_install} for {purpose}.",
        "Could you install {sw_install}? The software centre doesn't have it.",
        "requesting {sw_install} install, approved by my manager"]),
    Scenario("software", R, "high", 30, [
        "{biz_app} is not loading, it gives {http_err}.",
        "Can't log in to {biz_app}, the page times out.",
        "{biz_app} is down, {http_err} when I open it.",
        "Orders can't be entered, {biz_app} shows {http_err}."], scope=True, org=True),
    Scenario("software", R, "medium", 20, [
        "Windows update stuck at {pct}% for an hour.",
        "The update keeps failing with error {upd_err}.",
        "Install of {sw_install} fails with error {upd_err}.",
        "My laptop keeps asking to restart for updates and then fails with {upd_err}."]),
    Scenario("software", R, "low", 18, [
        "My computer is very slow {since}.",
        "Takes about 10 minutes to boot in the morning.",
        "{app} is sluggish, typing lags behind.",
        "Everything on my {laptop} feels slow, lots of spinning wheels."], scope=True),
    Scenario("software", R, "medium", 16, [
        "{app} says my licence has expired.",
        "My Excel macro stopped working after the update.",
        "{app} is asking me to activate the product again.",
        "Add-in for {app} disappeared after the update."]),
    # ---------------- access ----------------
    Scenario("access", R, "medium", 58, [
        "I forgot my password and I'm locked out.",
        "Account locked after too many attempts.",
        "My password expired while I was on holiday and now I can't log in.",
        "Can't log in to Windows, says my account is disabled.",
        "locked out again!! need a password reset",
        "I changed my password and now Outlook keeps asking for the old one."], scope=False),
    Scenario("access", R, "medium", 30, [
        "I have a new phone and need to move my MFA to it.",
        "I'm not getting the MFA push notification any more.",
        "Authenticator app was deleted, can't approve sign-ins.",
        "The MFA code is always rejected as invalid."]),
    Scenario("access", R, "low", 50, [
        "Please give me access to {share}.",
        "I need read access to the {dept} SharePoint site.",
        "Can you add me to the {dept} Teams channel?",
        "Need the approver role in {biz_app} for {purpose}.",
        "Could I get edit rights on {share}? My manager approved it.",
        "Please grant {first} {last} access to {biz_app}."]),
    Scenario("access", R, "medium", 22, [
        "New starter {first} {last} joins {dept} on {day} and needs an account and email.",
        "{first} {last} left the company today, please disable their account.",
        "Contractor {first} {last} needs access extended for another month.",
        "Please set up accounts for two new {dept} hires starting {day}."]),
    Scenario("access", R, "high", 16, [
        "Single sign-on is failing, I can't get into any apps.",
        "Okta login just loops back to the sign-in page.",
        "SSO gives 'access denied' for every app {since}."], scope=True, org=True),
    Scenario("access", R, "medium", 12, [
        "I lost my building badge.",
        "My badge doesn't open the door to {location} any more.",
        "Badge reader at {location} rejects my card."]),
    # ---------------- email ----------------
    Scenario("email", R, "medium", 34, [
        "Outlook isn't receiving emails {since}.",
        "Outlook is stuck on 'Trying to connect...'.",
        "Emails sit in my outbox and never send.",
        "My inbox hasn't updated {since}, nothing new comes in.",
        "outlook wont open, says it cannot start"], scope=True, org=True),
    Scenario("email", R, "low", 16, [
        "I keep getting a 'mailbox almost full' warning.",
        "Can I get a bigger mailbox? I'm at 98%.",
        "How do I archive old emails? Mailbox is nearly full."]),
    Scenario("email", R, "low", 16, [
        "Please add me to the shared mailbox {mailbox}.",
        "I need send-as rights on {mailbox}.",
        "Can you create a distribution list for the {dept} team?"]),
    Scenario("email", R, "medium", 14, [
        "Emails to {domain} bounce back with {smtp_err}.",
        "Messages to {domain} are rejected: {smtp_err}.",
        "Customers say my replies land in their spam folder."]),
    Scenario("email", R, "low", 16, [
        "How do I change my email signature?",
        "Calendar invites show the wrong time zone.",
        "Getting loads of marketing spam in my inbox.",
        "My out-of-office won't switch on.",
        "Meeting rooms don't show up in Outlook scheduling assistant."]),
    # ---------------- security (resolve) ----------------
    Scenario("security", R, "medium", 22, [
        "Got a suspicious email from '{fake_sender}' asking me to verify my account. I did NOT click anything.",
        "Forwarding a weird email that looks like phishing, I didn't open the attachment.",
        "Received a text claiming to be {fake_sender} asking for my login. Ignored it, just reporting.",
        "Is this email from {fake_sender} legit? Haven't clicked the link."], urgency=False),
    Scenario("security", R, "low", 12, [
        "Defender says a scan is overdue, is that normal?",
        "Can you confirm the new encryption prompt on my laptop is legit?",
        "How do I report a phishing email properly?",
        "Is it ok to use a password manager for work accounts?"], urgency=False),
    # ---------------- printing ----------------
    Scenario("printing", R, "low", 14, [
        "{printer} on {location} keeps jamming.",
        "Paper jam error on {printer} that won't clear.",
        "{printer} keeps printing blank pages."], scope=True),
    Scenario("printing", R, "medium", 14, [
        "My print jobs are stuck in the queue.",
        "{printer} shows offline on my laptop but others can print.",
        "Nothing I send to {printer} comes out."], scope=True),
    Scenario("printing", R, "low", 10, [
        "{printer} is out of toner.",
        "Prints from {printer} are faded and streaky.",
        "Colour prints come out all green on {printer}."]),
    Scenario("printing", R, "low", 10, [
        "How do I add the printer on {location}?",
        "Please install the driver for {printer} on my laptop.",
        "Can't find {printer} in the list of printers."]),
    Scenario("printing", R, "medium", 8, [
        "Scan to email stopped working on {printer}.",
        "Scanner on {printer} says 'SMTP error' when sending."], scope=True),
    # ---------------- other (resolve) ----------------
    Scenario("other", R, "low", 16, [
        "Where can I find the IT policy on personal devices?",
        "Who do I contact to get a desk phone?",
        "Is there any training for {app}?",
        "What's the process to return my old laptop?",
        "Just wanted to say thanks for fixing my laptop so fast!",
        "The IT satisfaction survey link doesn't work."]),
    Scenario("other", R, "medium", 8, [
        "Can someone set up the AV in {room} for an all-hands on {day}?",
        "We need a video link to the {location} for a town hall {day}.",
        "Need a projector and a conference mic for a customer workshop {day}."]),
    # ---------------- escalate: security incidents (fixed priority) ----------------
    Scenario("security", E, "high", 18, [
        "I clicked a link in an email from '{fake_sender}' and it asked me to log in. I closed it.",
        "Opened the attachment on an email from {fake_sender} before noticing the address was wrong.",
        "clicked on a link in a phishing mail, a file downloaded, what do i do"], urgency=False),
    Scenario("security", E, "critical", 12, [
        "I entered my password on a page from a phishing email before I realised.",
        "I typed my username and password into a fake {fake_sender} login page.",
        "Gave my MFA code to someone on the phone claiming to be IT."], urgency=False),
    Scenario("security", E, "critical", 10, [
        "All my files on {share} now end in .locked and there's a note asking for bitcoin.",
        "A popup says my files are encrypted and demands payment.",
        "Ransom note on my desktop, can't open any documents."], urgency=False),
    Scenario("security", E, "high", 12, [
        "My laptop was stolen from my car. It has customer data on it.",
        "Left my work laptop on the train; it has the {dept} payroll files on it.",
        "Lost my company phone with email on it at the airport."], urgency=False),
    Scenario("security", E, "critical", 8, [
        "I see logins to my account from {country} that weren't me, and a rule forwarding my mail outside.",
        "Our admin noticed an unknown admin account created last night.",
        "Someone is sending emails from my account that I didn't write."], urgency=False),
    Scenario("security", E, "high", 10, [
        "Antivirus flagged a trojan and couldn't remove it.",
        "My browser opens random ad pages and a program I didn't install is running.",
        "Found a USB stick in the car park and plugged it in to see whose it was.",
        "Got an email from 'the CEO' asking me to buy gift cards urgently; I already bought two.",
        "I accidentally emailed a spreadsheet with customer bank details to an external address."],
        urgency=False),
    # ---------------- refuse: non-IT or against policy (always low) ----------------
    Scenario("other", X, "low", 42, [
        "Can you book my flight to {city} for {day}?",
        "Please order lunch for our team meeting.",
        "Could IT fix the coffee machine on {location}?",
        "My home router isn't working, can someone come to my house?",
        "Please update my bank details for payroll.",
        "Can you reserve the parking spot by the entrance for me?",
        "Can you help set up my personal Netflix on my home TV?",
        "Please write my performance review for me.",
        "Can someone book a hotel in {city} for the conference?"]),
    Scenario("access", X, "low", 18, [
        "Give me {colleague}'s password, I need their files.",
        "Add me to Domain Admins so I can install stuff myself.",
        "Reset my manager's password and tell me the new one please.",
        "Please share the login for the CFO's mailbox with me.",
        "Can I have admin rights on all the finance servers? It would be faster."]),
    Scenario("security", X, "low", 16, [
        "Disable the audit logging on my machine, it slows things down.",
        "Turn off the antivirus so my game runs faster.",
        "Please turn off MFA for my account permanently, it's annoying.",
        "Can you delete the security camera footage from last Friday?",
        "Whitelist this torrent site for me please."]),
    Scenario("software", X, "low", 16, [
        "Install a cracked copy of {paid_sw} for me, we don't have budget.",
        "Can you put {game} on my work laptop?",
        "I downloaded a keygen for {paid_sw}, can you run it as admin?",
        "Please install a free VPN from the app store so I can watch foreign TV."]),
    Scenario("network", X, "low", 10, [
        "Bypass the web filter so I can stream the football.",
        "Open port 3389 on the firewall to my home PC.",
        "Give me the admin password for the office router."]),
    Scenario("email", X, "low", 8, [
        "Forward all of {colleague}'s emails to me without telling them.",
        "Send an email to all staff from the CEO's account for me.",
        "Can you read {colleague}'s inbox and tell me if they mentioned me?"]),
]

_SLOT = re.compile(r"\{(\w+)\}")


def fill(rng: Random, template: str) -> str:
    """Replace each {slot} with a random value, left to right (deterministic for a seed)."""
    return _SLOT.sub(lambda m: rng.choice(SLOTS[m.group(1)]), template)


def typo(rng: Random, text: str) -> str:
    """Mangle one or two words: swap, drop or double a letter, like a hurried typist."""
    words = text.split(" ")
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) < 4 or not w.isalpha():
            continue
        j = rng.randrange(1, len(w) - 1)
        kind = rng.randrange(3)
        if kind == 0:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif kind == 1:
            w = w[:j] + w[j + 1:]
        else:
            w = w[:j] + w[j] + w[j:]
        words[i] = w
    return " ".join(words)


def label(rng: Random, s: Scenario) -> tuple[str, str, str, list[str]]:
    """Pick the cue sentences for one ticket and derive its priority and action from them."""
    cues: list[str] = []
    action, level = s.action, LEVELS.index(s.base)
    scope = "one"
    if s.scope:
        scope = rng.choices(["one", "team", "org"], [60, 30, 10 if s.org else 0])[0]
    if scope == "org":
        cues.append(rng.choice(SCOPE_ORG))
        return s.category, "critical", "escalate", cues
    if scope == "team":
        cues.append(rng.choice(SCOPE_TEAM))
        level += 1
    if s.urgency:
        urg = rng.choices(["none", "hot", "cool"], [55, 25, 20])[0]
        if urg != "none":
            cues.append(rng.choice(URGENT_HOT if urg == "hot" else URGENT_COOL))
            level += 1 if urg == "hot" else -1
    elif action == E and rng.random() < 0.2:
        cues.append(rng.choice(ESCALATE_HEDGE))
    if action == R:
        level = max(0, min(2, level))
    else:
        level = LEVELS.index(s.base)  # incidents and refusals keep their fixed priority
    return s.category, LEVELS[level], action, cues


def ticket(rng: Random, s: Scenario) -> tuple[str, dict]:
    """Compose one ticket: optional greeting, body, detail, cues, signature, then noise."""
    category, priority, action, cues = label(rng, s)
    body = fill(rng, rng.choice(s.templates))
    if rng.random() < 0.15:
        body = typo(rng, body)
    parts = [body]
    if action == R and rng.random() < 0.35:
        parts.append(rng.choice(DETAILS))
    parts += [fill(rng, c) for c in cues]
    if len(parts) > 1 and body[-1] not in ".!?":
        parts[0] = body + "."
    text = " ".join(parts)
    if rng.random() < 0.45:
        text = rng.choice(GREETINGS) + rng.choice([" ", "\n"]) + text
    if rng.random() < 0.35:
        text += rng.choice([" ", "\n"]) + fill(rng, rng.choice(SIGNATURES))
    hot = any(c in URGENT_HOT for c in cues)
    if hot and rng.random() < 0.3:
        text = rng.choice(["URGENT: ", "URGENT!!! ", "Urgent - "]) + text
    r = rng.random()
    if r < 0.12:
        text = text.lower()
    elif r < (0.22 if hot else 0.13):
        text = text.upper()
    if rng.random() < 0.03:
        text = text.replace(" ", "  ", 1)  # stray double space, curation collapses it
    return text, {"category": category, "priority": priority, "action": action}


def generate(seed: int, n: int, dup_rate: float = 0.01) -> list[str]:
    """Return n JSONL lines: n - round(n*dup_rate) unique tickets plus exact duplicates."""
    rng = Random(seed)
    weights = [s.weight for s in SCENARIOS]
    n_dup = round(n * dup_rate)
    seen: set[str] = set()
    lines: list[str] = []
    while len(lines) < n - n_dup:
        s = rng.choices(SCENARIOS, weights)[0]
        text, resp = ticket(rng, s)
        key = " ".join(text.split())
        if key in seen or len(text) > 400:
            continue  # keep tickets unique (no accidental conflicting labels) and short
        seen.add(key)
        lines.append(json.dumps({"ticket": text, "response": json.dumps(resp, ensure_ascii=False)},
                                ensure_ascii=False))
    for _ in range(n_dup):
        src = rng.randrange(len(lines))
        lines.insert(rng.randint(src + 1, len(lines)), lines[src])
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "it_tickets" / "tickets.jsonl")
    args = ap.parse_args(argv)
    lines = generate(args.seed, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
    counts = {k: Counter() for k in ("category", "priority", "action")}
    for line in lines:
        resp = json.loads(json.loads(line)["response"])
        for k in counts:
            counts[k][resp[k]] += 1
    for k, c in counts.items():
        print(f"{k:9s}", ", ".join(f"{v}={c[v]}" for v in sorted(c)), file=sys.stderr)
    print(f"wrote {len(lines)} records to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
