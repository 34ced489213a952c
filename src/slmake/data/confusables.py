"""Unicode look-alikes (homoglyphs) folded to the ASCII letter or digit they imitate.

Near-duplicate detection compares texts after `normalize.fold`: NFKC (full-width and mathematical
letters, ligatures), lower case, then this table, so "Рrіntеr" typed with Cyrillic letters and the
Latin "Printer" give the same MinHash signature. The table is the subset of Unicode's confusables
(UTS #39 confusables.txt, as shipped by confusable-homoglyphs 3.3.1) whose prototype is one ASCII
letter or digit and that NFKC leaves alone; it is kept here, not looked up at run time, so the
curation output cannot change when that package does. Regenerate with `regenerate()`.
"""

from __future__ import annotations

# FROM[i] folds to TO[i] (str.maketrans needs equal lengths).
FROM = (
    '×ıƄƍƖƦƧƷƼƽǀȜȢȣɑɡɣɩɪɯʋʏͿΑΒΕΖΗΙΚΜΝΟΡΤΥΧαγινορσυϜϨϳϺЅІЈАВЕЗКМНО'
    'РСТУХЬабгеорсухѕіјѡѴѵҮүһҽӀӏӠԁԌԛԜԝՍՏՕագզհոռսցքօ۱۵۷०০৪৭੦੧੪૦ଃଠ୦'
    '୨௦ం౦ಂ೦ംഠ൦൭ං๐໐ဝ၀ყჿሀዐᎠᎡᎢᎥᎩᎪᎫᎬᎳᎷᎻᎽᏀᏂᏃᏎᏏᏒᏔᏕᏙᏚᏞᏟᏢᏦᏧᏮᏳᏴᐯᑌᑭᑯᑲᒍᒪᒿᕁᕼᕽ'
    'ᖇᖯᖴᗅᗞᗪᗰᗷ᙭᙮ᚷᛁᛕᛖᴄᴏᴑᴜᴠᴡᴢᴦᶃᶌẝỿ℮∣∨∪⊤⋁⋃⋿⍳⍴⍺⏽╳⟙⤫⤬⨯ⲅⲎⲒⲔⲘⲚⲞⲟⲢⲣⲤⲥⲦⲨⲬⳊⳌ'
    'ⳐⳒⴸⴹⵏⵔⵕⵝ〇ꓐꓑꓒꓓꓔꓖꓗꓙꓚꓜꓝꓟꓠꓡꓢꓣꓦꓧꓪꓫꓬꓮꓰꓲꓳꓴꙄꙇꛟꛯꜱꝚꝪꝮꞘꞙꞟꞫꞲꞳꞴꬲꬵꬽꭇꭈꭎꭒꭚꭵꮁ'
    'ꮃꮓꮩꮪꮯ𐊂𐊆𐊇𐊊𐊐𐊒𐊕𐊖𐊗𐊠𐊡𐊢𐊥𐊫𐊰𐊱𐊲𐊴𐋏𐋵𐌁𐌂𐌉𐌑𐌕𐌗𐌚𐌠𐌢𐐄𐐕𐐛𐐠𐐬𐐽𐑈𐒴𐓂𐓎𐓒𐓪𐓶𐔓𐔖𐔘𐔜𐔝𐔥𐔦𐔧𑓐𑜆𑜊𑜎𑜏'
    '𑢠𑢢𑢣𑢤𑢦𑢩𑢬𑢮𑢯𑢲𑢵𑢸𑢻𑢼𑣀𑣁𑣂𑣃𑣄𑣆𑣈𑣊𑣌𑣕𑣖𑣗𑣘𑣜𑣠𑣥𑣦𑣩𑣬𑣯𑣲𖼈𖼊𖼖𖼨𖼵𖼺𖼻𖽀𖽂𖽃𝈆𝈍𝈒𝈓𝈖𝈪🝌🝨'
)
TO = (
    'xibgIR235sl388agyiiwuyJABEZHIKMNOPTYXayivopouF2jMSIJABE3KMHO'
    'PCTYXba6reopcyxsijwVvYyheIi3dGqWwUSOwqqhnnugfoloVoO89o98o8OO'
    '9oooooooo9oooooyoUODRTiYAJEWMHYGhZ4bRWSVSLCPKd6GBVUPdbJL2xHx'
    'RbFADDMBXxXlKMcoouvwzrgyfyelvUTvUEipalXTxxxrHIKMNOoPpCcTYX93'
    'L6VElOQXOBPdDTGKJCZFMNLSRVHWXYAElOU2iV2s239Ffu3JXBeforruuyir'
    'wzvscBEFlXOPSTABCFOMTYXHZBClMTX8lXOCLSocsROU7ouNOKCVFLXOvwww'
    'VFLYEZ9E4LOU5TvsFiz7o3969ouyOZWCXWCVTLlRS3AUY3V7FRLCT'
)
TABLE = str.maketrans(FROM, TO)


def regenerate() -> tuple[str, str]:
    """(FROM, TO) from confusable-homoglyphs' data (pip install confusable-homoglyphs==3.3.1)."""
    import unicodedata

    from confusable_homoglyphs.utils import load

    data, cands = load("confusables.json"), {}
    for c, homoglyphs in data.items():
        for h in homoglyphs:
            x = h["c"]
            if len(c) == 1 and not c.isascii() and len(x) == 1 and x.isascii() and x.isalnum():
                cands.setdefault(c, set()).add(x)
            if len(c) == 1 and c.isascii() and c.isalnum() and len(x) == 1 and not x.isascii():
                cands.setdefault(x, set()).add(c)

    def pick(c: str, options: set[str]) -> str:
        """Same case first, letters before digits. Capital I's prototype is l (UTS #39: I, l, 1 and
        Cyrillic/Greek capital I are one class), but `fold` lower-cases after this table, where a
        capital I must become i: so an upper-case letter whose only prototype is l or 1 gets I."""
        if c.isupper() and options <= {"l", "1"}:
            return "I"
        low = not c.isupper()
        return sorted(options, key=lambda o: (o.isdigit(), o.isalpha() and o.islower() != low, o))[0]

    table = {c: pick(c, o) for c, o in cands.items() if unicodedata.normalize("NFKC", c) == c}
    keys = sorted(table)
    return "".join(keys), "".join(table[k] for k in keys)
