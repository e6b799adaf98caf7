"""A small message catalogue: Swedish by default, English with ``?lang=en`` (remembered in a cookie).

Keys are short ids; a key missing from a language falls back to Swedish, then to the key itself, so
a forgotten translation shows up as readable text rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable

LANGS = ("sv", "en")
LANG_COOKIE = "imd_lang"

MESSAGES: dict[str, dict[str, str]] = {
    "sv": {
        "app": "IMD central", "login": "Logga in", "logout": "Logga ut", "username": "Användarnamn",
        "password": "Lösenord", "bad_login": "Fel användarnamn eller lösenord.",
        "faults": "Felkö", "fault": "Fel", "collectors": "Insamlare", "search": "Sök", "meters": "Mätare",
        "meter": "Mätare", "apartment": "Lägenhet", "apartments": "Lägenheter", "property": "Fastighet",
        "properties": "Fastigheter", "portal": "Portal", "my_home": "Min förbrukning",
        "severity": "Allvarlighet", "rule": "Kontroll", "state": "Status", "age": "Ålder", "sort": "Sortering",
        "filter": "Filtrera", "all": "Alla", "unresolved": "Olösta", "open": "Öppen",
        "acknowledged": "Kvitterad", "resolved": "Löst", "critical": "Kritisk", "warning": "Varning",
        "info": "Info", "newest": "Nyast först", "oldest": "Äldst först", "worst": "Allvarligast först",
        "count": "Antal", "message": "Beskrivning", "first_seen": "Först sedd", "last_seen": "Senast sedd",
        "assignee": "Ansvarig", "acknowledge": "Kvittera", "ack_selected": "Kvittera markerade",
        "resolve": "Lös", "reopen": "Öppna igen", "assign": "Tilldela", "comment": "Kommentera",
        "text": "Text", "history": "Historik", "evidence": "Underlag", "readings_around": "Avläsningar runt felet",
        "raw_frames": "Råa telegram och avkodning", "meter_faults": "Mätarens fel", "select": "Välj",
        "age_any": "Alla åldrar", "age_1d": "Senaste dygnet", "age_7d": "Senaste veckan",
        "age_old": "Äldre än en vecka", "online": "Ansluten", "offline": "Frånkopplad", "unknown": "Okänd",
        "last_poll": "Senaste avläsning", "outbox": "Kö i insamlaren", "version": "Version",
        "search_hint": "Adress, lägenhet, objektnummer, mätar-id eller hyresgästreferens",
        "no_rows": "Inga rader.", "download_csv": "Ladda ner CSV", "medium": "Medium", "unit": "Enhet",
        "consumption": "Förbrukning", "day": "Dag", "month": "Månad", "year": "År", "date": "Datum",
        "value": "Värde", "estimated": "uppskattat", "estimated_note": "Kursiva värden med * är uppskattade (glapp i avläsningarna fördelat jämnt).",
        "replacements": "Mätarbyten", "installed": "Installerad", "removed": "Borttagen",
        "per_m2": "per m²", "area": "Yta m²", "this_period": "Denna period", "last_period": "Förra perioden",
        "last_year": "Samma period i fjol", "open_faults": "Öppna fel", "overview": "Översikt",
        "compare": "Jämförelser", "compare_apartments": "Lägenhet mot lägenhet (per m²)",
        "compare_meters": "Mätare mot mätare", "compare_properties": "Fastighet mot fastighet (per m²)",
        "top_consumers": "Största förbrukare", "vacant": "Outhyrda lägenheter", "archive": "Arkiv",
        "archive_empty": "Inga debiteringsunderlag, sammanställningar eller fakturor har arkiverats ännu.",
        "archive_tables": "Tabeller att ladda ner", "this_month": "Denna månad", "prev_month": "Förra månaden",
        "same_month_last_year": "Samma månad i fjol", "building_avg": "Husets snitt per lägenhet",
        "building_avg_m2": "Husets snitt per m²", "forbidden": "Åtkomst nekad",
        "forbidden_text": "Du har inte behörighet till den här sidan.", "not_found": "Hittades inte",
        "period": "Period", "months12": "Senaste 12 månaderna", "address": "Adress",
        "object_number": "Objektnummer", "tenant_ref": "Hyresgästreferens", "results": "Resultat",
        "show": "Visa", "language": "Language: English", "apply": "Använd", "per_day": "Per dag",
        "per_month": "Per månad", "per_year": "Per år", "serial": "Mätar-id", "manufacturer": "Tillverkare",
        "frame": "Telegram", "received": "Mottaget", "register": "Register", "quantity": "Storhet",
        "decode": "Avkodning", "actor": "Vem", "kind": "Händelse", "at": "Tid", "none": "–",
        "heat": "Värme", "hot_water": "Varmvatten", "cold_water": "Kallvatten", "electricity": "El",
        "cooling": "Kyla", "gas": "Gas", "room_temperature": "Rumstemperatur", "collector": "Insamlare",
        "meters_in": "Mätare i lägenheten", "your_apartment": "Din lägenhet", "change": "Förändring",
        "choose_meters": "Välj mätare", "back": "Tillbaka", "csrf_failed": "Formuläret har gått ut; ladda om sidan och försök igen.",
        "done": "Klart", "skip_to_content": "Hoppa till innehållet", "main_nav": "Huvudmeny",
        "buildings": "Hus", "role": "Roll",
    },
    "en": {
        "app": "IMD central", "login": "Log in", "logout": "Log out", "username": "Username",
        "password": "Password", "bad_login": "Wrong username or password.",
        "faults": "Fault queue", "fault": "Fault", "collectors": "Collectors", "search": "Search",
        "meters": "Meters", "meter": "Meter", "apartment": "Apartment", "apartments": "Apartments",
        "property": "Property", "properties": "Properties", "portal": "Portal", "my_home": "My consumption",
        "severity": "Severity", "rule": "Check", "state": "State", "age": "Age", "sort": "Sort",
        "filter": "Filter", "all": "All", "unresolved": "Unresolved", "open": "Open",
        "acknowledged": "Acknowledged", "resolved": "Resolved", "critical": "Critical", "warning": "Warning",
        "info": "Info", "newest": "Newest first", "oldest": "Oldest first", "worst": "Worst first",
        "count": "Count", "message": "Description", "first_seen": "First seen", "last_seen": "Last seen",
        "assignee": "Assignee", "acknowledge": "Acknowledge", "ack_selected": "Acknowledge selected",
        "resolve": "Resolve", "reopen": "Reopen", "assign": "Assign", "comment": "Comment", "text": "Text",
        "history": "History", "evidence": "Evidence", "readings_around": "Readings around the fault",
        "raw_frames": "Raw frames and decode", "meter_faults": "The meter's faults", "select": "Select",
        "age_any": "Any age", "age_1d": "Last day", "age_7d": "Last week", "age_old": "Older than a week",
        "online": "Online", "offline": "Offline", "unknown": "Unknown", "last_poll": "Last poll",
        "outbox": "Outbox depth", "version": "Version",
        "search_hint": "Address, apartment, object number, meter id or tenant reference",
        "no_rows": "No rows.", "download_csv": "Download CSV", "medium": "Medium", "unit": "Unit",
        "consumption": "Consumption", "day": "Day", "month": "Month", "year": "Year", "date": "Date",
        "value": "Value", "estimated": "estimated",
        "estimated_note": "Italic values marked * are estimated (a gap in the readings spread evenly).",
        "replacements": "Meter replacements", "installed": "Installed", "removed": "Removed",
        "per_m2": "per m²", "area": "Area m²", "this_period": "This period", "last_period": "Last period",
        "last_year": "Same period last year", "open_faults": "Open faults", "overview": "Overview",
        "compare": "Comparisons", "compare_apartments": "Apartment vs apartment (per m²)",
        "compare_meters": "Meter vs meter", "compare_properties": "Property vs property (per m²)",
        "top_consumers": "Top consumers", "vacant": "Vacant apartments", "archive": "Archive",
        "archive_empty": "No billing bases, property summaries or invoices have been archived yet.",
        "archive_tables": "Tables to download", "this_month": "This month", "prev_month": "Previous month",
        "same_month_last_year": "Same month last year", "building_avg": "Building average per apartment",
        "building_avg_m2": "Building average per m²", "forbidden": "Access denied",
        "forbidden_text": "You are not allowed to see this page.", "not_found": "Not found",
        "period": "Period", "months12": "Last 12 months", "address": "Address",
        "object_number": "Object number", "tenant_ref": "Tenant reference", "results": "Results",
        "show": "Show", "language": "Språk: svenska", "apply": "Apply", "per_day": "Per day",
        "per_month": "Per month", "per_year": "Per year", "serial": "Meter id", "manufacturer": "Manufacturer",
        "frame": "Frame", "received": "Received", "register": "Register", "quantity": "Quantity",
        "decode": "Decode", "actor": "Who", "kind": "Event", "at": "Time", "none": "–",
        "heat": "Heat", "hot_water": "Hot water", "cold_water": "Cold water", "electricity": "Electricity",
        "cooling": "Cooling", "gas": "Gas", "room_temperature": "Room temperature", "collector": "Collector",
        "meters_in": "Meters in the apartment", "your_apartment": "Your apartment", "change": "Change",
        "choose_meters": "Choose meters", "back": "Back",
        "csrf_failed": "The form has expired; reload the page and try again.", "done": "Done",
        "skip_to_content": "Skip to content", "main_nav": "Main menu", "buildings": "Buildings", "role": "Role",
    },
}  # fmt: skip


def translator(lang: str) -> Callable[[str], str]:
    table = MESSAGES.get(lang, MESSAGES["sv"])
    fallback = MESSAGES["sv"]

    def gettext(key: str) -> str:
        return table.get(key) or fallback.get(key) or key

    return gettext


def pick_language(query_lang: str | None, cookie_lang: str | None) -> str:
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGS:
            return candidate
    return "sv"
