"""Word lists for the synthetic catalog generator (`data_pipelines.catalog`).

Everything here is invented or generic vocabulary: brand names are made up
(any resemblance to a real company is accidental), product types, colours and
materials are ordinary English shop words.  Multi-valued fields are written as
``"a|b|c"`` strings to keep the tables compact; ``word*3`` repeats a palette
entry to weight it.
"""

from __future__ import annotations

from dataclasses import dataclass


def _split(s: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in s.split("|"):
        part = part.strip()
        if not part:
            continue
        word, _, times = part.partition("*")
        out.extend([word.strip()] * (int(times) if times else 1))
    return tuple(out)


# ---------------------------------------------------------------- colours
# family -> colour words a listing may use.  Grading compares FAMILIES, so a
# "blue" query matches navy, cobalt and dark-wash items.
COLOUR_FAMILIES: dict[str, tuple[str, ...]] = {
    k: _split(v)
    for k, v in {
        "blue": "blue|navy|cobalt|sky blue|royal blue|indigo|dark wash|mid wash|light wash",
        "red": "red|burgundy|crimson|maroon|cherry|wine",
        "grey": "grey|charcoal|heather grey|slate|graphite|ash|space grey",
        "black": "black|jet black|onyx|matte black",
        "white": "white|off-white|ivory|cream|chalk",
        "green": "green|olive|forest green|sage|emerald|mint",
        "brown": "brown|tan|chocolate|camel|cognac|walnut|espresso|tortoiseshell",
        "beige": "beige|sand|stone|khaki|oatmeal|taupe|natural|nude",
        "pink": "pink|blush|rose|fuchsia|dusty pink",
        "yellow": "yellow|mustard|lemon|ochre",
        "orange": "orange|rust|burnt orange|coral|terracotta",
        "purple": "purple|plum|lavender|lilac|violet",
        "silver": "silver|chrome|gunmetal",
        "gold": "gold|rose gold|champagne",
        "clear": "clear|transparent|frosted",
    }.items()
}
COLOUR_FAMILY: dict[str, str] = {w: fam for fam, ws in COLOUR_FAMILIES.items() for w in ws}
# words a shopper uses for the family itself ("gray" is a spelling variant)
FAMILY_QUERY_WORDS: dict[str, tuple[str, ...]] = {
    fam: {"grey": ("grey", "gray"), "clear": ("clear", "see-through")}.get(fam, (fam,))
    for fam in COLOUR_FAMILIES
}

PALETTES: dict[str, tuple[str, ...]] = {
    k: _split(v)
    for k, v in {
        "apparel": "black*4|white*2|navy*3|charcoal|heather grey|grey|off-white|cream|burgundy"
        "|crimson|red|olive|forest green|sage|khaki|camel|tan|cobalt|sky blue|royal blue"
        "|blush|rose|mustard|rust|plum|lavender|stone|chocolate",
        "denim": "dark wash*3|mid wash*2|light wash*2|black*2|grey|indigo|white",
        "footwear": "black*4|white*3|navy|grey|charcoal|tan|brown|cognac|chocolate|olive"
        "|burgundy|cobalt|sky blue|red|sand|stone|blush|off-white",
        "bags": "black*4|tan|cognac|navy|olive|camel|burgundy|grey|sand|chocolate"
        "|forest green|cream|blush",
        "home": "white*2|cream|black|charcoal|sage|terracotta|navy|mustard|blush|stone|slate"
        "|forest green|ivory|oatmeal",
        "tech": "black*4|white*2|matte black|space grey|silver|graphite|navy|sky blue|blush"
        "|sage|clear|red",
        "lips": "red|crimson|cherry|burgundy|wine|rose|blush|fuchsia|dusty pink|nude|plum"
        "|coral|taupe",
        "nails": "red|crimson|cherry|burgundy|rose|blush|fuchsia|nude|plum|coral|navy|black"
        "|lilac|mint|gold|silver|lemon|cobalt",
        "sports": "black*4|navy|charcoal|grey|sky blue|cobalt|forest green|sage|lavender"
        "|blush|orange|red|lemon|purple",
        "accessories": "black*4|navy|charcoal|heather grey|camel|tan|cognac|brown|burgundy"
        "|olive|cream|mustard|rust",
        "eyewear": "black*3|tortoiseshell*2|gold|silver|gunmetal|clear|rose gold",
        "watch": "silver*2|gold|rose gold|black|gunmetal",
    }.items()
}

# ---------------------------------------------------------------- materials
MATERIAL_FAMILIES: dict[str, tuple[str, ...]] = {
    k: _split(v)
    for k, v in {
        "wool": "wool|merino wool|lambswool|wool blend|wool felt",
        "cotton": "cotton|organic cotton|pima cotton|cotton twill|stretch cotton|cotton fleece"
        "|french terry|cotton gabardine|waxed cotton",
        "leather": "leather|full-grain leather|nubuck|leather strap",
        "faux leather": "faux leather|vegan leather",
        "denim": "denim|stretch denim|selvedge denim",
        "fleece": "fleece|polar fleece|sherpa fleece",
        "nylon": "nylon|recycled nylon|ripstop nylon|braided nylon",
        "polyester": "polyester|recycled polyester",
        "rubber": "rubber|natural rubber",
        "steel": "stainless steel|carbon steel|damascus steel|steel",
        "ceramic": "ceramic|stoneware|porcelain",
        "wood": "acacia wood|walnut|beech wood",
        "aluminium": "aluminium|anodised aluminium",
        "plastic": "plastic|bpa-free plastic|polycarbonate",
        "down": "down|duck down|goose down",
    }.items()
}
MATERIAL_FAMILY: dict[str, str] = {w: fam for fam, ws in MATERIAL_FAMILIES.items() for w in ws}


def material_family(material: str) -> str:
    m = str(material).strip().lower()
    return MATERIAL_FAMILY.get(m, m)


# ---------------------------------------------------------------- sizes
SIZE_SCHEMES: dict[str, tuple[str, ...]] = {
    k: _split(v)
    for k, v in {
        "shoe": "6|6.5|7|7.5|8|8.5|9|9.5|10|10.5|11|12|13",
        "apparel": "XS|S|M|L|XL|XXL",
        "waist": "28x30|30x30|30x32|32x30|32x32|32x34|34x32|34x34|36x32|38x32",
        "sml": "S|M|L",
        "one": "One Size",
    }.items()
}
APPAREL_SIZE_WORDS = {"XS": "extra small", "S": "small", "M": "medium", "L": "large",
                      "XL": "extra large", "XXL": "xxl"}

# ---------------------------------------------------------------- categories
@dataclass(frozen=True)
class CategorySpec:
    name: str
    weight: float  # share of listings
    brands: tuple[tuple[str, int], ...]  # (name, tier) tier 0 budget, 1 mid, 2 premium
    marketing: tuple[str, ...]
    features: tuple[str, ...]
    uses: tuple[str, ...]
    care: tuple[str, ...]


def _brands(s: str) -> tuple[tuple[str, int], ...]:
    return tuple((b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in s.split("|"))


CATEGORIES: dict[str, CategorySpec] = {c.name: c for c in [
    CategorySpec("footwear", 1.2,
                 _brands("Acme:1|Strivo:0|Paceline:1|Kessick:2|Ondaro:1|Velmora:2|Tread & Co:0"),
                 _split("Lightweight|Classic|Everyday|Comfort|Premium|Performance|Essential"),
                 _split("a breathable upper|a cushioned midsole|a grippy rubber outsole|a padded collar"
                        "|a removable insole|a supportive heel counter|all-day comfort"),
                 _split("everyday wear|long days on your feet|work and weekends|travel|city streets"),
                 _split("Wipe clean with a damp cloth.|True to size.|Half sizes available."
                        "|Runs slightly small; consider sizing up.")),
    CategorySpec("tops", 1.4,
                 _brands("Loomwell:1|Harlow & Finch:2|Basic Theory:0|Northcote:1|Pilea:1"
                         "|Cotterell:2|Undyed:0"),
                 _split("Classic|Relaxed Fit|Slim Fit|Essential|Premium|Soft|Everyday|Oversized"),
                 _split("a relaxed fit|soft-touch fabric|reinforced seams|a ribbed collar"
                        "|a tag-free neckline|breathable fabric|everyday comfort"),
                 _split("layering|everyday wear|the office|lazy weekends|travel"),
                 _split("Machine washable at 30C.|True to size.|Model wears size M."
                        "|Pre-shrunk, so it keeps its shape.")),
    CategorySpec("bottoms", 1.1,
                 _brands("Indigo Mill:1|Selvane:2|Ravelo:1|Stitchworks:0|Fernhill Denim:2"
                         "|Tollis:0|Marrow:1"),
                 _split("Classic|Slim Fit|Relaxed|Stretch|Essential|Everyday|Tapered"),
                 _split("a comfortable waistband|deep pockets|a flattering fit|four-way stretch"
                        "|reinforced stitching|a mid-rise cut|everyday comfort"),
                 _split("everyday wear|the office|workouts|weekends|travel"),
                 _split("Machine washable at 30C.|Wash inside out.|True to size."
                        "|Inseam measured on size 32.")),
    CategorySpec("outerwear", 1.0,
                 _brands("Stormhold:2|Alpenfeld:2|Drizzle & Gale:1|Kepler Ridge:1|Huxley Outdoor:1"
                         "|Brisk:0|Coldharbour:0"),
                 _split("Waterproof|Lightweight|Packable|Insulated|Classic|Premium|Windproof"),
                 _split("taped seams|an adjustable hood|zipped hand pockets|a storm flap"
                        "|a soft inner lining|adjustable cuffs|reliable warmth"),
                 _split("commuting|hiking|wet weather|cold mornings|travel"),
                 _split("Machine washable on a gentle cycle.|Do not tumble dry.|Packs into its own pocket."
                        "|Regular fit; size up for layering.")),
    CategorySpec("bags", 0.9,
                 _brands("Carrow:1|Packhaus:0|Lune & Lark:2|Tidewell:1|Bramble Goods:1|Oxley:2"),
                 _split("Classic|Minimal|Everyday|Travel|Premium|Compact|Water-Resistant"),
                 _split("a padded laptop compartment|an adjustable strap|zipped inner pockets"
                        "|sturdy handles|a magnetic closure|a water-resistant finish"
                        "|plenty of room for essentials"),
                 _split("commuting|travel|the gym|weekend trips|everyday carry"),
                 _split("Spot clean only.|Wipe clean.|Lifetime warranty on zips.")),
    CategorySpec("home & kitchen", 0.9,
                 _brands("Hearth & Hollow:1|Kitchwell:0|Stonebrook:2|Maple Row:1|Ferro Home:2"
                         "|Larder:0"),
                 _split("Classic|Premium|Everyday|Professional|Modern|Handmade|Essential"),
                 _split("even heat distribution|an ergonomic handle|a generous capacity"
                        "|a non-slip base|a soft, cosy feel|easy cleaning|long-lasting quality"),
                 _split("everyday cooking|the home cook|busy mornings|gifting|cosy evenings"),
                 _split("Dishwasher safe.|Hand wash recommended.|Easy to clean.|Makes a great gift.")),
    CategorySpec("electronics accessories", 0.9,
                 _brands("Voltic:1|Cabl:0|Ampere Labs:2|Zentri:1|Pivota:1|Nexilo:0|Quellio:2"),
                 _split("Fast|Slim|Premium|Ultra|Compact|Pro|Essential"),
                 _split("fast charging|drop protection|a slim profile|long battery life"
                        "|wide compatibility|a tangle-free design|a 2-year warranty"),
                 _split("home and office|travel|daily commuting|gaming|working from home"),
                 _split("Compatible with most USB-C devices.|2-year warranty.|Includes a travel pouch.")),
    CategorySpec("beauty", 0.8,
                 _brands("Lumelle:2|Dewfield:1|Skinsmith:1|Aurel:2|Petal & Pith:1|Klaro:0|Mirabel:0"),
                 _split("Hydrating|Gentle|Long-Lasting|Nourishing|Vegan|Dermatologist-Tested|Daily"),
                 _split("a lightweight texture|a non-greasy finish|long-lasting wear"
                        "|a fragrance-free formula|cruelty-free ingredients|all-day hydration"
                        "|a gentle, everyday formula"),
                 _split("daily use|sensitive skin|all skin types|everyday wear|special occasions"),
                 _split("Dermatologist tested.|Vegan and cruelty free.|For external use only."
                        "|Patch test before first use.")),
    CategorySpec("sports & outdoors", 0.8,
                 _brands("Forgeon:1|Kinetra:0|Summit Supply:2|Ironvale:1|Trailborne:2|Flexora:0"),
                 _split("Non-Slip|Heavy-Duty|Lightweight|Pro|Durable|Compact|Performance"),
                 _split("a non-slip grip|a durable build|a lightweight design|easy packing"
                        "|reliable performance|a comfortable feel|a lifetime guarantee"),
                 _split("home workouts|the gym|camping trips|hiking|training sessions"),
                 _split("Wipe clean after use.|Lifetime guarantee.|Carry bag included.")),
    CategorySpec("accessories", 0.8,
                 _brands("Halden:1|Brimwell:0|Oaksmith:2|Sunnvale:1|Tempo & Tide:2|Ashby Lane:0"),
                 _split("Classic|Everyday|Premium|Minimal|Vintage|Essential|Timeless"),
                 _split("a comfortable fit|a timeless look|quality craftsmanship|a soft hand-feel"
                        "|a versatile design|an adjustable fit|a gift-ready box"),
                 _split("everyday wear|gifting|travel|the weekend|the office"),
                 _split("Comes gift boxed.|One size fits most.|Hand wash only.|1-year warranty.")),
]}

# ---------------------------------------------------------------- product types
@dataclass(frozen=True)
class TypeSpec:
    name: str
    category: str
    titles: tuple[str, ...]  # how listings name it (first = most common)
    query_names: tuple[str, ...]  # canonical shopper words (first = usual form)
    synonyms: tuple[str, ...]  # shopper words listings rarely use
    related: tuple[str, ...]  # closely related types -> grade 1 at most
    materials: tuple[str, ...]
    sizes: tuple[str, ...]
    price: tuple[float, float]  # (median, log-sigma)
    palette: str  # key into PALETTES ('' when not coloured)
    coloured: bool  # colour is a visible, queryable attribute; else colour is 'n/a'
    audience: tuple[str, ...]  # decorative title words ("Men's"); never graded


def _t(name, category, titles, syn, materials, sizes, price, palette, related="",
       query="", coloured=True, audience="") -> TypeSpec:
    sz = SIZE_SCHEMES[sizes] if sizes in SIZE_SCHEMES else _split(sizes)
    return TypeSpec(name, category, _split(titles), _split(query) or (name,), _split(syn),
                    _split(related), _split(materials), sz, price, palette, coloured,
                    _split(audience))


_MW = "Men's|Women's|Unisex"
TYPES: dict[str, TypeSpec] = {t.name: t for t in [
    # footwear
    _t("running shoes", "footwear", "Running Shoes|Running Shoe|Road Running Shoes",
       "sneakers|trainers|runners|jogging shoes", "mesh|knit|synthetic", "shoe", (95, .35),
       "footwear", "walking shoes", "running shoes|running shoe", audience=_MW),
    _t("walking shoes", "footwear", "Walking Shoes|Walking Shoe|Comfort Walking Shoes",
       "comfort sneakers|walkers|everyday trainers", "mesh|leather|knit", "shoe", (80, .35),
       "footwear", "running shoes|loafers", audience=_MW),
    _t("hiking boots", "footwear", "Hiking Boots|Hiking Boot|Trail Boots",
       "trekking boots|hikers|mountain boots|walking boots", "leather|suede|nubuck|nylon", "shoe",
       (140, .35), "footwear", "ankle boots|rain boots", audience=_MW),
    _t("ankle boots", "footwear", "Ankle Boots|Chelsea Boots|Ankle Boot",
       "booties|short boots|chelseas", "leather|suede|faux leather", "shoe", (120, .4),
       "footwear", "hiking boots", audience="Women's|Men's"),
    _t("rain boots", "footwear", "Rain Boots|Rain Boot|Wellington Boots",
       "wellies|gumboots|rubber boots|galoshes", "rubber|natural rubber|pvc", "shoe", (55, .35),
       "footwear", "hiking boots|ankle boots", audience=_MW),
    _t("sandals", "footwear", "Sandals|Slide Sandals|Sport Sandals",
       "flip flops|slides|sliders|thongs", "leather|eva foam|rubber|cork", "shoe", (40, .45),
       "footwear", "slippers", audience=_MW),
    _t("loafers", "footwear", "Loafers|Penny Loafers|Loafer",
       "slip-ons|slip on shoes|moccasins|driving shoes", "leather|suede", "shoe", (90, .4),
       "footwear", "walking shoes", audience="Men's|Women's"),
    _t("slippers", "footwear", "Slippers|House Slippers|Moccasin Slippers",
       "house shoes|mules|indoor shoes", "wool felt|sherpa fleece|faux fur", "shoe", (30, .4),
       "footwear", "sandals", audience=_MW),
    # tops
    _t("t-shirt", "tops", "T-Shirt|Crew Neck T-Shirt|Cotton T-Shirt",
       "tee|tshirt|t shirt|tees", "cotton|organic cotton|pima cotton|polyester", "apparel",
       (22, .45), "apparel", "tank top|polo shirt", "t-shirt|t-shirts", audience=_MW),
    _t("hooded sweatshirt", "tops", "Hooded Sweatshirt|Pullover Hooded Sweatshirt|Zip Hooded Sweatshirt",
       "hoodie|hoody|hoodies|zip up", "cotton fleece|french terry|recycled polyester", "apparel",
       (55, .4), "apparel", "crewneck sweatshirt|fleece jacket", audience=_MW),
    _t("crewneck sweatshirt", "tops", "Crewneck Sweatshirt|Crew Sweatshirt|Sweatshirt",
       "crewneck|crew neck jumper|sweats top", "cotton fleece|french terry|organic cotton", "apparel",
       (45, .4), "apparel", "hooded sweatshirt|knit sweater", audience=_MW),
    _t("knit sweater", "tops", "Knit Sweater|Crew Neck Sweater|Cable Knit Sweater",
       "jumper|pullover|knitwear|sweaters", "merino wool|lambswool|cashmere|cotton|acrylic", "apparel",
       (70, .5), "apparel", "cardigan|crewneck sweatshirt", audience=_MW),
    _t("cardigan", "tops", "Cardigan|Button Cardigan|Knit Cardigan",
       "cardi|button-up sweater|cardies", "merino wool|cotton|cashmere|acrylic", "apparel",
       (65, .45), "apparel", "knit sweater", audience="Women's|Men's"),
    _t("polo shirt", "tops", "Polo Shirt|Pique Polo Shirt|Classic Polo",
       "golf shirt|collared shirt|polos", "cotton|pima cotton|polyester", "apparel", (35, .4),
       "apparel", "t-shirt|dress shirt", audience=_MW),
    _t("dress shirt", "tops", "Dress Shirt|Oxford Shirt|Button-Down Shirt",
       "button up|formal shirt|work shirt|button down", "cotton|linen|stretch cotton", "apparel",
       (45, .4), "apparel", "polo shirt", audience="Men's|Women's"),
    _t("tank top", "tops", "Tank Top|Sleeveless Top|Racerback Tank",
       "vest top|singlet|cami|muscle tee", "cotton|polyester|organic cotton", "apparel", (18, .4),
       "apparel", "t-shirt", audience=_MW),
    # bottoms
    _t("jeans", "bottoms", "Jeans|Slim Jeans|Straight Leg Jeans|Skinny Jeans",
       "denims|denim pants|jean pants", "denim|stretch denim|selvedge denim", "waist", (65, .45),
       "denim", "chinos", audience="Men's|Women's"),
    _t("chinos", "bottoms", "Chinos|Chino Pants|Chino Trousers",
       "khakis|slacks|trousers|casual pants", "cotton twill|stretch cotton|linen", "waist", (50, .4),
       "apparel", "jeans|chino shorts", audience="Men's|Women's"),
    _t("joggers", "bottoms", "Joggers|Jogger Pants|Track Pants",
       "sweatpants|trackies|jogging bottoms|sweats", "cotton fleece|french terry|polyester",
       "apparel", (40, .4), "apparel", "leggings|running shorts", audience=_MW),
    _t("running shorts", "bottoms", "Running Shorts|Training Shorts|Split Running Shorts",
       "gym shorts|athletic shorts|workout shorts", "polyester|recycled polyester|nylon", "apparel",
       (28, .35), "apparel", "chino shorts|joggers", audience=_MW),
    _t("chino shorts", "bottoms", "Chino Shorts|Casual Shorts|Twill Shorts",
       "summer shorts|walk shorts|khaki shorts", "cotton twill|stretch cotton|linen", "waist",
       (32, .35), "apparel", "running shorts|chinos", audience="Men's|Women's"),
    _t("leggings", "bottoms", "Leggings|High-Waisted Leggings|Yoga Leggings",
       "tights|yoga pants|workout pants", "nylon|polyester|cotton", "apparel", (40, .45),
       "apparel", "joggers", audience="Women's*3|Men's"),
    _t("skirt", "bottoms", "Midi Skirt|A-Line Skirt|Pleated Skirt",
       "skirts|midi|maxi", "cotton|linen|polyester|denim", "apparel", (45, .45), "apparel",
       audience="Women's"),
    # outerwear
    _t("rain jacket", "outerwear", "Rain Jacket|Waterproof Rain Jacket|Rain Shell",
       "raincoat|waterproof|anorak|rain mac", "nylon|recycled nylon|polyester", "apparel",
       (90, .45), "apparel", "windbreaker|trench coat", audience=_MW),
    _t("puffer jacket", "outerwear", "Puffer Jacket|Down Jacket|Quilted Puffer Jacket",
       "puffa|puffy coat|down coat|quilted coat", "duck down|goose down|recycled polyester", "apparel",
       (140, .45), "apparel", "parka|puffer vest", audience=_MW),
    _t("parka", "outerwear", "Parka|Winter Parka|Hooded Parka",
       "winter coat|heavy coat|arctic coat", "nylon|polyester|cotton", "apparel", (190, .45),
       "apparel", "puffer jacket|wool coat", audience=_MW),
    _t("fleece jacket", "outerwear", "Fleece Jacket|Zip Fleece|Polar Fleece Jacket",
       "fleece|mid layer|fleecy top", "polar fleece|sherpa fleece|recycled polyester", "apparel",
       (55, .4), "apparel", "hooded sweatshirt|puffer vest", audience=_MW),
    _t("trench coat", "outerwear", "Trench Coat|Belted Trench Coat|Classic Trench",
       "trench|mac coat|belted coat", "cotton gabardine|waxed cotton|polyester", "apparel",
       (160, .45), "apparel", "wool coat|rain jacket", audience="Women's|Men's"),
    _t("wool coat", "outerwear", "Wool Coat|Overcoat|Tailored Coat",
       "topcoat|peacoat|dress coat|smart coat", "wool blend|merino wool|cashmere", "apparel",
       (200, .45), "apparel", "trench coat|parka", audience="Women's|Men's"),
    _t("windbreaker", "outerwear", "Windbreaker|Wind Jacket|Packable Wind Jacket",
       "windcheater|shell jacket|spray jacket", "nylon|ripstop nylon|polyester", "apparel",
       (60, .4), "apparel", "rain jacket", audience=_MW),
    _t("puffer vest", "outerwear", "Puffer Vest|Quilted Vest|Gilet",
       "bodywarmer|body warmer|sleeveless jacket", "duck down|recycled polyester|nylon", "apparel",
       (75, .4), "apparel", "puffer jacket|fleece jacket", audience=_MW),
    # bags
    _t("backpack", "bags", "Backpack|Laptop Backpack|Daypack",
       "rucksack|knapsack|school bag|bookbag", "nylon|canvas|recycled polyester|leather",
       "20 L|25 L|30 L", (60, .5), "bags", "duffel bag|laptop sleeve"),
    _t("tote bag", "bags", "Tote Bag|Canvas Tote|Shopper Tote",
       "shopper|carryall|shoulder bag|market bag", "canvas|leather|faux leather|cotton", "One Size",
       (35, .6), "bags", "crossbody bag"),
    _t("crossbody bag", "bags", "Crossbody Bag|Cross-Body Bag|Sling Bag",
       "messenger bag|satchel|side bag|purse", "leather|faux leather|nylon", "One Size", (55, .55),
       "bags", "tote bag|belt bag"),
    _t("belt bag", "bags", "Belt Bag|Waist Bag|Hip Bag",
       "fanny pack|bum bag|hip pack", "nylon|recycled polyester|leather", "One Size", (30, .45),
       "bags", "crossbody bag"),
    _t("duffel bag", "bags", "Duffel Bag|Weekender Bag|Holdall",
       "gym bag|travel bag|overnight bag|duffle", "canvas|nylon|leather|recycled polyester",
       "30 L|40 L|60 L", (70, .5), "bags", "backpack"),
    _t("wallet", "bags", "Wallet|Bifold Wallet|Card Holder",
       "billfold|card case|money clip", "leather|faux leather|canvas", "One Size", (35, .55),
       "bags", "crossbody bag", audience="Men's|Women's|"),
    _t("laptop sleeve", "bags", "Laptop Sleeve|Laptop Case|Padded Laptop Sleeve",
       "notebook sleeve|computer sleeve|notebook cover", "neoprene|wool felt|leather",
       "13 in|14 in|15.6 in", (25, .4), "tech", "backpack"),
    # home & kitchen
    _t("coffee mug", "home & kitchen", "Coffee Mug|Ceramic Mug|Mug",
       "cup|coffee cup|tea cup|cuppa", "ceramic|stoneware|porcelain|enamel", "300 ml|350 ml|450 ml",
       (14, .35), "home", "travel mug", "coffee mug|mug"),
    _t("travel mug", "home & kitchen", "Travel Mug|Insulated Travel Mug|Commuter Mug",
       "thermos|tumbler|to-go cup|keep cup", "stainless steel|bamboo|bpa-free plastic",
       "350 ml|450 ml|600 ml", (24, .35), "home", "coffee mug|water bottle"),
    _t("chef's knife", "home & kitchen", "Chef's Knife|Chef Knife|Kitchen Knife",
       "cooking knife|cook's knife|gyuto|santoku", "stainless steel|carbon steel|damascus steel",
       "6 in|8 in|10 in", (60, .6), "", coloured=False, query="chef's knife|chef knife"),
    _t("frying pan", "home & kitchen", "Frying Pan|Skillet|Non-Stick Frying Pan",
       "frypan|fry pan|omelette pan|griddle", "cast iron|stainless steel|non-stick aluminium|carbon steel",
       "20 cm|24 cm|28 cm", (40, .5), "home", "saucepan"),
    _t("saucepan", "home & kitchen", "Saucepan|Sauce Pan|Milk Pan",
       "pot|cooking pot|stockpot", "stainless steel|copper|non-stick aluminium", "16 cm|18 cm|20 cm",
       (45, .45), "home", "frying pan"),
    _t("cutting board", "home & kitchen", "Cutting Board|Chopping Board|Carving Board",
       "chopping block|butcher block|serving board", "bamboo|acacia wood|walnut|plastic",
       "small|medium|large", (30, .45), "", coloured=False),
    _t("throw blanket", "home & kitchen", "Throw Blanket|Knit Throw|Sofa Throw",
       "blanket|afghan|couch blanket|throw", "cotton|wool|polar fleece|chenille", "One Size",
       (45, .45), "home"),
    _t("bath towel", "home & kitchen", "Bath Towel|Bath Sheet|Cotton Towel",
       "towels|shower towel|bathroom towel", "cotton|organic cotton|bamboo|linen",
       "70 x 140 cm|90 x 160 cm", (22, .45), "home"),
    # electronics accessories
    _t("phone case", "electronics accessories", "Phone Case|Protective Phone Case|Slim Phone Case",
       "phone cover|mobile cover|bumper|cell cover", "silicone|tpu|leather|polycarbonate",
       "6.1 in|6.7 in", (18, .45), "tech", "screen protector"),
    _t("screen protector", "electronics accessories", "Screen Protector|Tempered Glass Screen Protector",
       "screen guard|glass protector|screen film", "tempered glass|pet film", "6.1 in|6.7 in",
       (11, .35), "", "phone case", coloured=False),
    _t("charging cable", "electronics accessories", "USB-C Cable|Charging Cable|USB-C to USB-C Cable",
       "charger cable|charger lead|charging cord|usb c cord", "braided nylon|pvc|tpe", "1 m|2 m|3 m",
       (13, .4), "tech", "wall charger"),
    _t("wall charger", "electronics accessories", "Wall Charger|USB-C Charger|Power Adapter",
       "plug|charging brick|power brick|charger plug", "plastic|polycarbonate", "20 W|30 W|65 W",
       (25, .4), "tech", "charging cable|power bank"),
    _t("power bank", "electronics accessories", "Power Bank|Portable Charger|Battery Pack",
       "portable battery|external battery|battery charger", "aluminium|plastic",
       "5000 mAh|10000 mAh|20000 mAh", (35, .4), "tech", "wall charger"),
    _t("wireless earbuds", "electronics accessories", "Wireless Earbuds|True Wireless Earbuds|Bluetooth Earbuds",
       "earphones|in-ear headphones|buds|ear buds", "plastic|aluminium", "One Size", (70, .6),
       "tech", "over-ear headphones"),
    _t("over-ear headphones", "electronics accessories", "Over-Ear Headphones|Wireless Headphones|Noise Cancelling Headphones",
       "headset|cans|over ear headset", "plastic|aluminium|faux leather", "One Size", (140, .6),
       "tech", "wireless earbuds", "over-ear headphones|headphones"),
    _t("laptop stand", "electronics accessories", "Laptop Stand|Adjustable Laptop Stand|Foldable Laptop Stand",
       "laptop riser|notebook stand|computer stand", "aluminium|bamboo|steel", "One Size", (35, .4),
       "tech"),
    # beauty (material = key ingredient / finish)
    _t("moisturiser", "beauty", "Moisturiser|Daily Moisturizer|Face Cream",
       "face lotion|moisturizing cream|day cream|hydrating cream", "hyaluronic acid|ceramides"
       "|shea butter|niacinamide|aloe vera", "50 ml|100 ml", (24, .6), "",
       "sunscreen", "moisturiser|moisturizer", coloured=False),
    _t("shampoo", "beauty", "Shampoo|Daily Shampoo|Clarifying Shampoo",
       "hair wash|2 in 1|hair cleanser", "argan oil|tea tree|coconut oil|keratin",
       "250 ml|400 ml|1 L", (12, .5), "", "conditioner", coloured=False),
    _t("conditioner", "beauty", "Conditioner|Hair Conditioner|Daily Conditioner",
       "detangler|hair softener|cream rinse", "argan oil|coconut oil|keratin|shea butter",
       "250 ml|400 ml|1 L", (13, .5), "", "shampoo", coloured=False),
    _t("sunscreen", "beauty", "Sunscreen SPF 50|Sunscreen Lotion|Mineral Sunscreen",
       "sunblock|sun cream|suncream|spf lotion", "zinc oxide|chemical filters|aloe vera",
       "50 ml|100 ml|200 ml", (18, .4), "", "moisturiser", coloured=False),
    _t("lipstick", "beauty", "Lipstick|Matte Lipstick|Satin Lipstick",
       "lip colour|lip color|lippy|lip stick", "matte|satin|sheer", "One Size", (16, .5), "lips"),
    _t("nail polish", "beauty", "Nail Polish|Nail Lacquer|Gel Nail Polish",
       "nail varnish|nail paint|nail color", "gel|cream|glitter", "One Size", (9, .4), "nails"),
    _t("perfume", "beauty", "Eau de Parfum|Perfume|Eau de Toilette",
       "fragrance|scent|cologne", "floral|woody|citrus|vanilla", "30 ml|50 ml|100 ml", (65, .5),
       "", coloured=False, audience="Women's|Men's|Unisex"),
    # sports & outdoors
    _t("yoga mat", "sports & outdoors", "Yoga Mat|Non-Slip Yoga Mat|Exercise Mat",
       "pilates mat|workout mat|gym mat|fitness mat", "tpe|pvc|natural rubber|cork", "4 mm|6 mm|8 mm",
       (35, .45), "sports", "resistance bands"),
    _t("water bottle", "sports & outdoors", "Water Bottle|Insulated Water Bottle|Sports Bottle",
       "flask|drinks bottle|canteen|hydration bottle", "stainless steel|bpa-free plastic|glass",
       "500 ml|750 ml|1 L", (25, .4), "sports", "travel mug"),
    _t("dumbbells", "sports & outdoors", "Dumbbells|Dumbbell Set|Hex Dumbbells",
       "hand weights|free weights|weights", "cast iron|neoprene|rubber", "2 kg|5 kg|10 kg",
       (40, .5), "sports", "kettlebell"),
    _t("kettlebell", "sports & outdoors", "Kettlebell|Competition Kettlebell|Vinyl Kettlebell",
       "kettle bell|swing weight|kb", "cast iron|vinyl|steel", "8 kg|12 kg|16 kg", (45, .45),
       "sports", "dumbbells"),
    _t("resistance bands", "sports & outdoors", "Resistance Bands|Resistance Band Set|Loop Bands",
       "exercise bands|workout bands|stretch bands|therabands", "latex|fabric|tpe", "One Size",
       (18, .4), "sports", "yoga mat"),
    _t("camping tent", "sports & outdoors", "Camping Tent|Dome Tent|Backpacking Tent",
       "tent|shelter|pop up tent", "polyester|ripstop nylon", "2-person|3-person|4-person",
       (150, .55), "sports", "sleeping bag"),
    _t("sleeping bag", "sports & outdoors", "Sleeping Bag|Mummy Sleeping Bag|Camping Sleeping Bag",
       "sleep sack|bedroll|camping bag", "duck down|synthetic fill", "regular|long", (90, .5),
       "sports", "camping tent"),
    _t("hiking socks", "sports & outdoors", "Hiking Socks|Trail Socks|Cushioned Crew Socks",
       "trekking socks|boot socks|walking socks", "merino wool|cotton|nylon", "sml", (16, .3),
       "sports", audience=_MW),
    # accessories
    _t("beanie", "accessories", "Beanie|Knit Beanie|Cuffed Beanie",
       "woolly hat|winter hat|toque|knit cap", "merino wool|acrylic|cashmere", "One Size",
       (22, .4), "accessories", "bucket hat|scarf"),
    _t("baseball cap", "accessories", "Baseball Cap|Dad Cap|Six-Panel Cap",
       "ball cap|snapback|trucker hat|hat", "cotton twill|nylon|wool blend", "One Size", (25, .35),
       "accessories", "bucket hat"),
    _t("bucket hat", "accessories", "Bucket Hat|Reversible Bucket Hat|Canvas Bucket Hat",
       "fishing hat|sun hat|fisherman hat", "cotton|canvas|nylon", "One Size", (28, .35),
       "accessories", "baseball cap"),
    _t("scarf", "accessories", "Scarf|Knit Scarf|Wool Scarf",
       "muffler|shawl|wrap|neck warmer", "merino wool|cashmere|cotton|acrylic", "One Size",
       (35, .5), "accessories", "beanie"),
    _t("sunglasses", "accessories", "Sunglasses|Polarized Sunglasses|Aviator Sunglasses",
       "shades|sunnies|sun glasses", "acetate|metal|polycarbonate", "One Size", (60, .6),
       "eyewear", audience=_MW),
    _t("belt", "accessories", "Belt|Leather Belt|Dress Belt",
       "waist belt|trouser belt|belts", "leather|canvas|suede", "apparel", (35, .45),
       "accessories", audience="Men's|Women's"),
    _t("watch", "accessories", "Watch|Analog Watch|Chronograph Watch",
       "wristwatch|timepiece|watches", "stainless steel|leather strap|silicone strap", "One Size",
       (120, .7), "watch", audience="Men's|Women's|Unisex"),
]}

# hypernym word(s) -> member types (all in one category).  "footwear" etc. cover a whole category.
_HYP = {
    "shoes": "running shoes|walking shoes|loafers",
    "boots": "hiking boots|ankle boots|rain boots",
    "shirts": "t-shirt|polo shirt|dress shirt",
    "sweaters": "knit sweater|cardigan",
    "pants": "jeans|chinos|joggers|leggings",
    "shorts": "running shorts|chino shorts",
    "jackets": "rain jacket|puffer jacket|fleece jacket|windbreaker",
    "coats": "parka|trench coat|wool coat|puffer jacket",
    "bags": "backpack|tote bag|crossbody bag|belt bag|duffel bag",
    "cookware": "frying pan|saucepan",
    "phone accessories": "phone case|screen protector|charging cable|wall charger|power bank",
    "headphones": "wireless earbuds|over-ear headphones",
    "skincare": "moisturiser|sunscreen",
    "hair care": "shampoo|conditioner",
    "makeup": "lipstick|nail polish",
    "gym equipment": "yoga mat|dumbbells|kettlebell|resistance bands",
    "camping gear": "camping tent|sleeping bag",
    "hats": "beanie|baseball cap|bucket hat",
}
HYPERNYMS: dict[str, tuple[str, ...]] = {k: _split(v) for k, v in _HYP.items()}
HYPERNYMS["kitchen"] = _split("coffee mug|travel mug|chef's knife|frying pan|saucepan|cutting board")
for _cat, _words in {"footwear": "footwear", "tops": "tops", "outerwear": "outerwear",
                     "accessories": "accessories"}.items():
    HYPERNYMS[_words] = tuple(t for t in TYPES if TYPES[t].category == _cat)
# surface forms of each hypernym a shopper may type
HYPERNYM_WORDS: dict[str, tuple[str, ...]] = {
    h: {"pants": ("pants", "trousers"), "sweaters": ("sweaters", "knitwear"),
        "bags": ("bags", "bag"), "gym equipment": ("gym equipment", "fitness gear"),
        "kitchen": ("kitchen", "kitchenware"), "hats": ("hats", "hat")}.get(h, (h,))
    for h in HYPERNYMS
}

# name pieces for model lines ("Cloudrun", "Aero Flex 2")
MODEL_PREFIXES = _split("Cloud|Aero|Swift|Nova|Terra|Flex|Core|Ridge|Zen|Luna|Echo|Volt|Drift"
                        "|Summit|Urban|Pulse|Glide|Storm|Haven|Arc|Halo|Metro|Vista|Orbit")
MODEL_SUFFIXES = _split("run|lite|max|pro|flow|form|line|wave|tec|grip|step|fit|go|one|shift")

PRICE_CAPS = (10, 15, 20, 25, 30, 40, 50, 60, 75, 80, 100, 120, 150, 200, 250, 300, 400, 500,
              750, 1000)

FILLER_WORDS = _split("best|new|sale|deals|top rated|gift")
GENDER_WORDS = _split("mens|womens|men's|women's|for men|for women")

# tokens the lexical proxy ignores (function words, price/size glue, decorative audience words)
STOPWORDS = frozenset(_split(
    "a|an|and|the|for|in|of|with|to|on|by|from|at|is|it|this|that|under|below|less|than|over"
    "|max|size|sz|s|us|x|w|l|men|mens|women|womens|unisex|dollars|best|new|sale|deals|top|rated"
    "|cheap|gift"))
