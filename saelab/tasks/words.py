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

# --- The wide docstring training generator (split "wide") and its dev split. One pool: every lowercase
# 3+-letter word that is one token (leading space) under both the bundled tokenizer and GPT-2's, except
# Python keywords, args, cls, kwargs, param, params, self, every held-out word above and the dev words
# below; argument names are every other word of it, description words the rest (`docstring._WORDS`). With
# ~700 names a model cannot memorise which name follows which; it has to copy. The dev words are the pool's
# words no other list draws (every 16th from the 4th for names, every 32nd from the 12th for descriptions,
# in sorted order); no generated docstring text contains them (other training texts may: "left" is in an IOI
# template, and standard-library source may hold them, as it may hold the held-out words). `split="dev"`
# measures unseen names while training, for choosing when to stop, without touching the held-out split.
DOCSTRING_WIDE_WORDS: tuple[str, ...] = _words(
    """
    abduction about above abs absolute abstract access accord according account acquire act action active
    activity actual actually add added addition additional address adds affair after afterwards again against
    age agreement air airport algorith algorithm all alliance allow allows already also altern always amount
    analysis animal annot another ans answer any anything app appear append application appraisal appro
    appropri appropriate arbitrary arch are arg argument arguments arm around array arri arrived art asked
    assaults assess assessment assign associ associated assum assume att attack attempts attribute attributes
    audio aut auth auto automatically available avoid back backwards bad bag bakery ball bank base based bases
    bask basketball beach because become bed been before begin beh behavi being bel below best better between
    bill bin binary bind bit bits blank block blockade blocks board body bone book bool boolean boom bought
    bound box boy bro broken brother brought brow buffer build building built but byte bytes cache cake cal
    calc call called caller calling calls calm came campaign can cancel cancelled cannot canvas cap capital
    capt captivity care case cases cast castle cause cell century cert cha challenge change changed changes
    chaos chapter char character charge chars check checked child children choice chunks church cinema circ
    claim clash classes clean cleaned clear client clone close closed club code coin col collaboration colle
    collections color colour column com coma comm command commands comment committee common commuting comp
    compare compat compatibility competition compile compiled compiler complete complex component compute
    computer con condition conf config conflict confront confrontation conn connect connection cons
    consequence considered conspiracy construction constructor consult consultation consum cont contact
    contain containing contains content contents context contin contract control conv convention convert
    converted cook cookies cooking cooperation copy cor correct corresponding cost could count counter counts
    course cre creat create creating crisis crusade cup cur current currently cust custody custom dat data
    date dates daughter day days deal debug decided decimal decline decode decor decrease default defaults
    define defined definition degree delay delete demand demon demonstr demonstrations den dep depend
    deprecated der descript description descriptor design dest destroy detail details determine develop
    development diary dict dictionary diff difference different digits dinner dir dire direct direction
    directly director directories dis disagreement disorder display dispute dist div division doc doctor
    document does doesn dog dom domain domination don done dot double down drink drive dro drought dump during
    duty dyn dynasty each eas education eff effect effort either election element elements email emit
    employment empty enc encode encoded end ende endeavor ended energy engagement enough ensure ent entire
    entries entry enum environment epidemic equal equivalent err error errors escape etc eval evaluation even
    event events every everything evidence exact exactly example examples exc exception exceptions exchange
    exec execut executable executed exile exist existence exists exit exp expansion expect expected expedition
    experiments explicit explicitly exponent export expression ext extension extensions extra extract factor
    factory fail failed fails fall false fam fame famine farm father feature festival feud field fields fil
    file filename files fill film filter filters fin final find finish fire first fixed flag flights flo float
    floor flower fol fold follow followed following food foot force form format formatted found frame frames
    friends friendship frozen full fun func function functions fund fut future game garden gave gener generate
    generated generator get gets gift girl give given glass going got gra gro ground group groups growth had
    hair hall hand handle handlers handling happ happen hard hardship has hat have header headers health heart
    hel help helper here hex high history home horse hospital host hostility hotel hours house how html http
    ident ignore ignored ill illness image imm immediately imp impact implement implementations implemented
    imported imprison imprisonment impro improvement inc incarceration incl include including income increase
    ind indent index indic individual info inher init initial input ins insert inspect inst installed instance
    instances instant instead insurg insurgency integer integers inter interface internal interpre into inv
    invalid invasion investig investigation isn iss issue item items iter iterator its itself join journey
    json just keep key keys keyword kind king kingdom kiss kitchen know knowledge known label lake land lang
    language lar large last lasted later leader leading least leg len length lent less letter level lib
    libraries library light like likes limit line lines link list lists literal little lived load loc local
    locale locals log logging long longer look lookup loop lord loss lost lot love low lower lunch mac machine
    made magic mail main makes man management manager many map mapping mark market marriage master mat match
    matches material math matter max maximum may mean meaning means member members memo mention message
    messages met meta method methods micro midnight might mile min mind minute missing mod mode model modern
    modernization modified modify module modules month more morning most mostly move msg much mult multip
    museum music must name named names namespace nature near necess necessary necklace need needed negative
    negotiation net never new next node nodes non norm normal note nothing notoriety now num number numbers
    numeric obj object objects obs obstruction occup occupation occur occurs off office oil old one only open
    opened oper operation operations operator opt option optional options order origin original other
    otherwise our out outbreak outcome output over overhaul override pack pad page pair pairs paper par
    parameter parameters parent park parse parsed parser parsing part partial particular parts passed password
    pat patch path paths patient patrols pattern pen pending per performance phone picture piece pilgrimage
    pipe place plague plan plant plat platforms play played player point pol policy population port pos
    position positional positive poss possible post pound practice pre prec precision predicate pref prefers
    pres presidency president press pressure prevent previous pri price prin print pro prob probably proble
    process processes processing prod produce product production profit prog program progress project prompt
    property proto protocol prov provide provided provides public pur purpose pursuit push python quality
    query quest quiet quot quote quoted raids raised raises ran random range raw read readable reader reading
    ready real really rebell rebellion rebuilt received recent recession record recursive red reduce ref
    references reforms reg regime region register registry regular reign rel relation relationship relative
    remainder remaining remote remove removed rep replace replaced report repr represent representation
    representing req request required requires res research reset resource resp response rest restaur
    restaurant result results ret retaliation returned returning returns rev revolution right ring riot rise
    risk rival rivalry river role rom romance root round rounding row rule run running runtime safe said san
    sanctions sat save school science script sea sear search season seat second seconds section sector
    security seek seen select sem send sense sent sep sequences ser serial server session set sets setting
    settings setup sever shape share shared shell shift shop short should show showed side siege sign signal
    signature similar simple since single site sitting size skip slump small snack sockets som some something
    son sort sorted sound source south spa space spaces spec special specific specified specifies specify
    speed split stack staff stage standard start started starting stat state statement static station stature
    status std step still stint stone stop store stored story str stre street stri strict strike strikes
    string strings strip struct stud student study stuff style sub subclass subject success successful such
    sun sup super supp supplied support supported supports sure symbol sys table tag take taken takes talked
    tar target task tasks tax team technology temp template temporary ter termin test testing tests text than
    that the their them then therapy there these they thing thinking this though thought threads three threw
    thro through ticket tim time title token too top tot total tour town tra trace trade tradition trailing
    training trans treat treatment treaty tree trial trip truce true turn two typ type types und under
    underlying une unemployment union unit unknown unless until update updated url use used user uses using
    util val valid value values var variable variables various ver version versions very view vis visited
    voice voy voyage wait waiter waiting walked wall wanted war warfare warn warnings was watch way weekday
    well went were what whe when where whether which who why wife will win window within without won word work
    worker working works would wrap wrapped wrapper write writer writing wrote xml year yet you your zip
    """
)
DOCSTRING_DEV_VARIABLES: tuple[str, ...] = _words(
    """
    accept allowed arc attempt began both cam characters comments constants coordin dec des directory dry eng
    exce extended fix futures handed https included int kept lin make mem mon needs once own pil present
    proper rather registered require same separ smiled starts sum tell those tri useful want whose written
    """
)
DOCSTRING_DEV_NOUNS: tuple[str, ...] = _words(
    """
    aff ass bet cards compress created died ele existing forgot head inside left matching multiple ord pop put
    repe see spawn sym times via words
    """
)
