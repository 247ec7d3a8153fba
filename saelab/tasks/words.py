"""Word lists for the circuit tasks (data from the published datasets; see shared/reference/TASKS.md)."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Wang et al.'s 99 first names (single GPT-2 tokens with a leading space).
IOI_NAMES: tuple[str, ...] = _words(
    """
    Michael Christopher Jessica Matthew Ashley Jennifer Joshua Amanda Daniel David James Robert John
    Joseph Andrew Ryan Brandon Jason Justin Sarah William Jonathan Stephanie Brian Nicole Nicholas
    Anthony Heather Eric Elizabeth Adam Megan Melissa Kevin Steven Thomas Timothy Christina Kyle Rachel
    Laura Lauren Amber Brittany Danielle Richard Kimberly Jeffrey Amy Crystal Michelle Tiffany Jeremy
    Benjamin Mark Emily Aaron Charles Rebecca Jacob Stephen Patrick Sean Erin Jamie Kelly Samantha
    Nathan Sara Dustin Paul Angela Tyler Scott Katherine Andrea Gregory Erica Mary Travis Lisa Kenneth
    Bryan Lindsey Kristen Jose Alexander Jesse Katie Lindsay Shannon Vanessa Courtney Christine Alicia
    Cody Allison Bradley Samuel
    """
)
IOI_PLACES: tuple[str, ...] = _words(
    """
    store garden restaurant school hospital office house station
    """
)
IOI_OBJECTS: tuple[str, ...] = _words(
    """
    ring kiss bone basketball computer necklace drink snack
    """
)

# Training-text variety only (never in evaluation prompts).
IOI_EXTRA_PLACES: tuple[str, ...] = _words(
    """
    park beach library market kitchen museum church farm bakery cinema lake airport hotel bank castle
    river
    """
)
IOI_EXTRA_OBJECTS: tuple[str, ...] = _words(
    """
    book letter ball cup gift key hat phone flower coin map ticket pen cake watch bag
    """
)

# Event nouns in the style of Hanna et al. (all single GPT-2 tokens with a leading space).
GREATER_THAN_NOUNS: tuple[str, ...] = _words(
    """
    abduction accord affair agreement appraisal assaults assessment attack attempts campaign captivity
    case challenge chaos clash collaboration coma competition confrontation consequence conspiracy
    construction consultation contact contract convention cooperation custody deal decline decrease
    demonstrations development disagreement disorder dispute domination dynasty effect effort employment
    endeavor engagement epidemic evaluation exchange existence expansion expedition experiments fall
    fame flights friendship growth hardship hostility illness impact imprisonment improvement
    incarceration increase insurgency invasion investigation journey kingdom marriage modernization
    negotiation notoriety obstruction operation order outbreak outcome overhaul patrols pilgrimage
    plague plan practice process program progress project pursuit quest raids reforms reign relationship
    retaliation riot rise rivalry romance rule sanctions shift siege slump stature stint strikes study
    test testing tests therapy tour tradition treaty trial trip unemployment voyage warfare work war
    drought strike festival conflict famine
    """
)
# Training-text variety only.
GREATER_THAN_EXTRA_NOUNS: tuple[str, ...] = _words(
    """
    rebellion revolution crusade occupation blockade truce alliance feud exile boom crisis recession
    regime presidency
    """
)

# Argument and method names, and description words, as in Heimersheim & Janiak's generator.
DOCSTRING_VARIABLES: tuple[str, ...] = _words(
    """
    data name file value test new result line user key default request path output node item url model
    response text version function log string field start number values sub index error current context
    image message check json create size event state row obj parser end files form query fields instance
    label run action target array code num table source msg config first required options ret update
    module status group content client filename results last read command val base format color settings
    order found count match tag title parent call session token server host date description mode
    expected project info valid page header option task shape load names port old resource root
    """
)
DOCSTRING_NOUNS: tuple[str, ...] = _words(
    """
    price control action cost issue process position course minute education type research subject girl
    age father force order value act matter health lot street patient class mind church condition paper
    bank century section activity table building sense sort staff team student language town plan
    management morning committee product practice evidence ground letter foot boy back game food union
    role event land art support range stage trade voice arm club field history parent account material
    care manager project record example training window air light wife quality rule pound story tax
    worker data model nature bed hospital method unit detail date wall computer amount bit president
    chapter property son director leader south application board king production operation share lord
    contract picture test security election source colour future site loss shop animal heart purpose
    standard page doctor factor hair love music charge pattern design piece population tree knowledge
    performance plant pressure fire environment size analysis rest success thought region list relation
    set space statement demand sea step capital choice player station film feature income individual cup
    technology machine cell degree energy growth treatment mile function risk sound task top resource
    floor science style hall horse response character user answer dog look brother argument season bill
    element glass duty claim fund leg park title note daughter sun box river profit division stone post
    client help image oil sector attack direction seat
    """
)

# --- Held-out split: words no training generator draws from (evaluation only; see Task.generate(split=...)).
# Every word is one token under both the bundled tokenizer and GPT-2's, with its leading space, and is in no
# training word list above or below (tests/test_tasks_heldout.py checks both).
IOI_HELDOUT_PLACES: tuple[str, ...] = _words("archive platform zone screen")
IOI_HELDOUT_OBJECTS: tuple[str, ...] = _words("cookie turtle mailbox package")
GREATER_THAN_HELDOUT_NOUNS: tuple[str, ...] = _words(
    """
    release shutdown visit week recess dispatch transport compression optimization install
    """
)
DOCSTRING_HELDOUT_VARIABLES: tuple[str, ...] = _words(
    """
    addr args buf callback chunk cmd delim delta digest dst encoding env flags fmt handler height loader
    logger mask offset owner payload pid prefix proxy queue regex scheme selector seq sig sock src stream
    suffix tail timeout timer whence widget width alias anchor angle button dialog font lock macro mock
    socket thread tuple hash heap zero
    """
)
DOCSTRING_HELDOUT_NOUNS: tuple[str, ...] = _words(
    """
    boundary category comparison configuration conversion distribution documentation family information
    interpreter location memory permission reason reference selection sequence software structure syntax
    system behavior browser failure implementation usage warning hour
    """
)

# --- The broader docstring training generator (split "broad"): more argument names and description words,
# still disjoint from the held-out lists above.
DOCSTRING_EXTRA_VARIABLES: tuple[str, ...] = _words(
    """
    abs access active address algorithm arg audio auth binary bits block body bool buffer byte bytes
    cache caller canvas cert char chars child children chunks column comment compiler component conn
    connection counter custom day debug decimal delay descriptor dest dict digits dir domain email entry
    enum err exc exponent ext extension factory flag float frame func generator handle headers helper hex
    html ident indent init integer interface iterator keys keyword kind lang length level limit lines
    link literal locale lookup loop mapping member memo meta month namespace numbers operator pad pair
    params password patch pending pipe policy pos precision predicate protocol quote reader registry
    remote repr rounding runtime script serial setup shell signal spec stack struct symbol template
    threads util var view weekday wrapper writer
    """
)
DOCSTRING_EXTRA_NOUNS: tuple[str, ...] = _words(
    """
    absolute actual additional appropriate arbitrary available common complete complex correct different
    double empty entire equal exact explicit final full initial internal invalid large local lower
    main negative normal numeric optional original partial positive possible previous public random raw
    recent relative safe short similar simple single small special specific static strict temporary total
    various
    """
)
