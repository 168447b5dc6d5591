"""The Olist file layout, and shapes of the real data that the synthetic generator reproduces.

Every number here was measured once on the Kaggle Olist tables (`olistbr/brazilian-ecommerce`,
99,441 orders of 96,096 people, 2016-09 to 2018-10) and is kept as a plain constant, so
`storage.generate` needs no data files. Counts are kept as counts; the generator normalises.
"""

from __future__ import annotations

# The Kaggle files (by stem) and their columns, in the published order.
OLIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "olist_customers_dataset": (
        "customer_id", "customer_unique_id", "customer_zip_code_prefix",
        "customer_city", "customer_state",
    ),
    "olist_orders_dataset": (
        "order_id", "customer_id", "order_status", "order_purchase_timestamp",
        "order_approved_at", "order_delivered_carrier_date",
        "order_delivered_customer_date", "order_estimated_delivery_date",
    ),
    "olist_order_items_dataset": (
        "order_id", "order_item_id", "product_id", "seller_id", "shipping_limit_date",
        "price", "freight_value",
    ),
    "olist_order_payments_dataset": (
        "order_id", "payment_sequential", "payment_type", "payment_installments",
        "payment_value",
    ),
    "olist_order_reviews_dataset": (
        "review_id", "order_id", "review_score", "review_comment_title",
        "review_comment_message", "review_creation_date", "review_answer_timestamp",
    ),
    "olist_products_dataset": (
        "product_id", "product_category_name", "product_name_lenght",
        "product_description_lenght", "product_photos_qty", "product_weight_g",
        "product_length_cm", "product_height_cm", "product_width_cm",
    ),
    "olist_sellers_dataset": (
        "seller_id", "seller_zip_code_prefix", "seller_city", "seller_state",
    ),
    "product_category_name_translation": (
        "product_category_name", "product_category_name_english",
    ),
}

# Orders per person: 93,099 people with one order, 2,745 with two, ... (max 17).
ORDERS_PER_CUSTOMER = 99_441 / 96_096
REPEAT_SHARE = 2_997 / 96_096  # people with two or more orders

# Share of people (customer_unique_id) per state.
STATE_SHARES: dict[str, float] = {
    "SP": 0.41930, "RJ": 0.12880, "MG": 0.11710, "RS": 0.05491, "PR": 0.05078,
    "SC": 0.03674, "BA": 0.03409, "DF": 0.02157, "ES": 0.02043, "GO": 0.02030,
    "PE": 0.01672, "CE": 0.01366, "PA": 0.00988, "MT": 0.00911, "MA": 0.00754,
    "MS": 0.00721, "PB": 0.00538, "PI": 0.00502, "RN": 0.00493, "AL": 0.00416,
    "SE": 0.00356, "TO": 0.00284, "RO": 0.00250, "AM": 0.00149, "AC": 0.00080,
    "AP": 0.00070, "RR": 0.00047,
}

# Share of sellers per state.
SELLER_STATE_SHARES: dict[str, float] = {
    "SP": 0.5974, "PR": 0.1128, "MG": 0.0788, "SC": 0.0614, "RJ": 0.0553, "RS": 0.0417,
    "GO": 0.0129, "DF": 0.0097, "ES": 0.0074, "BA": 0.0061, "CE": 0.0042, "PE": 0.0029,
    "PB": 0.0019, "RN": 0.0016, "MS": 0.0016, "MT": 0.0013, "RO": 0.0006, "SE": 0.0006,
    "AC": 0.0003, "PI": 0.0003, "MA": 0.0003, "AM": 0.0003, "PA": 0.0003,
}

# Share of delivered orders that arrived after the estimated date, per customer state.
LATE_BY_STATE: dict[str, float] = {
    "AC": 0.038, "AL": 0.239, "AM": 0.041, "AP": 0.045, "BA": 0.140, "CE": 0.153,
    "DF": 0.071, "ES": 0.122, "GO": 0.082, "MA": 0.197, "MG": 0.056, "MS": 0.116,
    "MT": 0.068, "PA": 0.124, "PB": 0.110, "PE": 0.108, "PI": 0.160, "PR": 0.050,
    "RJ": 0.135, "RN": 0.108, "RO": 0.029, "RR": 0.122, "RS": 0.071, "SC": 0.098,
    "SE": 0.152, "SP": 0.059, "TO": 0.128,
}

# Orders by weekday (Monday first) and by hour of the purchase timestamp.
WEEKDAY_ORDERS = (16_196, 15_963, 15_552, 14_761, 14_122, 10_887, 11_960)
HOUR_ORDERS = (
    2_394, 1_170, 510, 272, 206, 188, 502, 1_231, 2_967, 4_785, 6_177, 6_578,
    5_995, 6_518, 6_569, 6_454, 6_675, 6_150, 5_769, 5_982, 6_193, 6_217, 5_816, 4_123,
)

# Order statuses (of 99,441).
STATUS_ORDERS: dict[str, int] = {
    "delivered": 96_478, "shipped": 1_107, "canceled": 625, "unavailable": 609,
    "invoiced": 314, "processing": 301, "created": 5, "approved": 2,
}

# Items per order (1..21).
ITEMS_PER_ORDER: dict[int, int] = {
    1: 88_863, 2: 7_516, 3: 1_322, 4: 505, 5: 204, 6: 198, 7: 22, 8: 8, 9: 3, 10: 8,
    11: 4, 12: 5, 13: 1, 14: 2, 15: 2, 20: 2, 21: 1,
}
SAME_PRODUCT_SHARE = 0.67  # multi-item orders whose items are all one product

# Type of the first payment of an order, and instalments of credit-card payments.
PAYMENT_TYPES: dict[str, float] = {
    "credit_card": 0.76969, "boleto": 0.19910, "voucher": 0.01631, "debit_card": 0.01487,
    "not_defined": 0.00003,
}
EXTRA_PAYMENT_ROWS: dict[int, int] = {  # orders with 1 + k payment rows (k >= 1)
    1: 2_382, 2: 301, 3: 108, 4: 52, 5: 36, 6: 28, 7: 11, 8: 9, 9: 5,
}
CARD_INSTALMENTS: dict[int, float] = {
    1: 0.3315, 2: 0.1616, 3: 0.1362, 4: 0.0924, 5: 0.0682, 6: 0.0510, 7: 0.0212,
    8: 0.0556, 9: 0.0084, 10: 0.0694, 11: 0.0003, 12: 0.0017, 15: 0.0010, 18: 0.0004,
    24: 0.0002,
}

# Review score shares for delivered on time, delivered late, and never delivered.
SCORES_ON_TIME = {1: 0.066, 2: 0.026, 3: 0.080, 4: 0.203, 5: 0.624}
SCORES_LATE = {1: 0.462, 2: 0.079, 3: 0.114, 4: 0.124, 5: 0.222}
SCORES_UNDELIVERED = {1: 0.620, 2: 0.080, 3: 0.100, 4: 0.080, 5: 0.120}
REVIEWED_SHARE = 0.992

# Product category (Portuguese, English or None when Olist has no translation), items
# sold, median item price (BRL) and median product weight (g). 1.4% of items have no
# category; 1.85% of products.
UNCATEGORISED_ITEM_SHARE = 1_603 / 112_650
UNCATEGORISED_PRICE, UNCATEGORISED_WEIGHT = 70.0, 400
CATEGORIES: tuple[tuple[str, str | None, int, float, int], ...] = (
    ("cama_mesa_banho", "bed_bath_table", 11115, 79.0, 1275),
    ("beleza_saude", "health_beauty", 9670, 79.9, 400),
    ("esporte_lazer", "sports_leisure", 8641, 78.0, 700),
    ("moveis_decoracao", "furniture_decor", 8334, 65.5, 1300),
    ("informatica_acessorios", "computers_accessories", 7827, 82.0, 300),
    ("utilidades_domesticas", "housewares", 6964, 59.8, 1205),
    ("relogios_presentes", "watches_gifts", 5991, 129.0, 348),
    ("telefonia", "telephony", 4545, 30.0, 225),
    ("ferramentas_jardim", "garden_tools", 4347, 59.9, 1650),
    ("automotivo", "auto", 4235, 84.9, 900),
    ("brinquedos", "toys", 4117, 79.9, 800),
    ("cool_stuff", "cool_stuff", 3796, 130.0, 1450),
    ("perfumaria", "perfumery", 3419, 85.0, 400),
    ("bebes", "baby", 3065, 78.0, 700),
    ("eletronicos", "electronics", 2767, 21.9, 200),
    ("papelaria", "stationery", 2517, 79.0, 1000),
    ("fashion_bolsas_e_acessorios", "fashion_bags_accessories", 2031, 49.0, 200),
    ("pet_shop", "pet_shop", 1947, 89.7, 875),
    ("moveis_escritorio", "office_furniture", 1691, 145.0, 10975),
    ("consoles_games", "consoles_games", 1137, 59.0, 250),
    ("malas_acessorios", "luggage_accessories", 1092, 99.9, 1250),
    ("construcao_ferramentas_construcao", "construction_tools_construction", 929, 89.0, 1200),
    ("eletrodomesticos", "home_appliances", 771, 47.6, 475),
    ("instrumentos_musicais", "musical_instruments", 680, 94.8, 800),
    ("eletroportateis", "small_appliances", 679, 99.0, 1150),
    ("casa_construcao", "home_construction", 604, 95.2, 900),
    ("livros_interesse_geral", "books_general_interest", 553, 44.9, 500),
    ("alimentos", "food", 510, 48.9, 330),
    ("moveis_sala", "furniture_living_room", 503, 104.0, 7500),
    ("casa_conforto", "home_confort", 434, 89.9, 1825),
    ("bebidas", "drinks", 379, 47.5, 333),
    ("audio", "audio", 364, 89.0, 400),
    ("market_place", "market_place", 311, 62.8, 527),
    ("construcao_ferramentas_iluminacao", "construction_tools_lights", 304, 104.5, 1050),
    ("climatizacao", "air_conditioning", 297, 140.0, 2950),
    (
        "moveis_cozinha_area_de_servico_jantar_e_jardim",
        "kitchen_dining_laundry_garden_furniture",
        281, 110.0, 6450,
    ),
    ("alimentos_bebidas", "food_drink", 278, 38.7, 900),
    ("industria_comercio_e_negocios", "industry_commerce_and_business", 268, 103.0, 6100),
    ("livros_tecnicos", "books_technical", 267, 57.5, 850),
    ("telefonia_fixa", "fixed_telephony", 264, 64.5, 394),
    ("fashion_calcados", "fashion_shoes", 262, 77.4, 850),
    ("construcao_ferramentas_jardim", "costruction_tools_garden", 238, 48.9, 1300),
    ("eletrodomesticos_2", "home_appliances_2", 238, 225.9, 7500),
    ("agro_industria_e_comercio", "agro_industry_and_commerce", 212, 258.6, 2650),
    ("artes", "art", 209, 97.5, 1700),
    ("pcs", "computers", 203, 1100.0, 2800),
    ("sinalizacao_e_seguranca", "signaling_and_security", 199, 75.0, 575),
    ("construcao_ferramentas_seguranca", "construction_tools_safety", 194, 125.6, 600),
    ("artigos_de_natal", "christmas_supplies", 153, 44.9, 600),
    ("fashion_roupa_masculina", "fashion_male_clothing", 132, 59.9, 600),
    ("fashion_underwear_e_moda_praia", "fashion_underwear_beach", 131, 59.9, 200),
    ("moveis_quarto", "furniture_bedroom", 109, 179.0, 10700),
    ("construcao_ferramentas_ferramentas", "costruction_tools_tools", 103, 60.0, 800),
    ("tablets_impressao_imagem", "tablets_printing_image", 83, 99.0, 300),
    ("portateis_casa_forno_e_cafe", "small_appliances_home_oven_and_coffee", 76, 587.0, 3800),
    ("cine_foto", "cine_photo", 72, 72.8, 400),
    ("dvds_blu_ray", "dvds_blu_ray", 64, 19.9, 200),
    ("livros_importados", "books_imported", 60, 63.0, 675),
    ("fashion_roupa_feminina", "fashio_female_clothing", 48, 49.5, 475),
    ("artigos_de_festas", "party_supplies", 43, 67.9, 1250),
    ("fraldas_higiene", "diapers_and_hygiene", 39, 37.0, 600),
    ("moveis_colchao_e_estofado", "furniture_mattress_and_upholstery", 38, 85.0, 1700),
    ("musica", "music", 38, 54.9, 550),
    ("flores", "flowers", 33, 26.0, 850),
    ("casa_conforto_2", "home_comfort_2", 30, 12.9, 700),
    ("fashion_esporte", "fashion_sport", 30, 59.9, 200),
    ("artes_e_artesanato", "arts_and_craftmanship", 24, 44.9, 775),
    ("portateis_cozinha_e_preparadores_de_alimentos", None, 15, 34.9, 1200),
    ("cds_dvds_musicais", "cds_dvds_musicals", 14, 45.0, 550),
    ("la_cuisine", "la_cuisine", 14, 137.0, 2450),
    ("pc_gamer", None, 9, 130.0, 2839),
    ("fashion_roupa_infanto_juvenil", "fashion_childrens_clothes", 8, 69.9, 210),
    ("seguros_e_servicos", "security_and_services", 2, 141.6, 812),
)

# Biggest cities of each state (people share within the state) and their zip-prefix range.
CITIES: dict[str, tuple[tuple[str, int, int, float], ...]] = {
    "AC": (
        ("rio branco", 69900, 69919, 0.857),
        ("cruzeiro do sul", 69980, 69980, 0.039),
        ("xapuri", 69930, 69930, 0.026),
        ("senador guiomard", 69925, 69925, 0.026),
    ),
    "AL": (
        ("maceio", 57014, 57084, 0.605),
        ("arapiraca", 57300, 57312, 0.07),
        ("penedo", 57200, 57200, 0.02),
        ("palmeira dos indios", 57601, 57607, 0.02),
    ),
    "AM": (
        ("manaus", 69015, 69093, 0.944),
        ("humaita", 69800, 69800, 0.028),
        ("urucurituba", 69180, 69180, 0.014),
    ),
    "AP": (
        ("macapa", 68900, 68909, 0.791),
        ("santana", 68925, 68928, 0.134),
        ("laranjal do jari", 68920, 68920, 0.03),
        ("porto grande", 68997, 68997, 0.015),
    ),
    "BA": (
        ("salvador", 40110, 41830, 0.369),
        ("feira de santana", 44001, 44090, 0.054),
        ("vitoria da conquista", 45000, 45077, 0.028),
        ("lauro de freitas", 42700, 42738, 0.022),
    ),
    "CE": (
        ("fortaleza", 60060, 60862, 0.49),
        ("sobral", 62010, 62051, 0.027),
        ("caucaia", 61600, 61658, 0.027),
        ("juazeiro do norte", 63010, 63050, 0.026),
    ),
    "DF": (
        ("brasilia", 70333, 73092, 0.997),
    ),
    "ES": (
        ("vitoria", 29018, 29090, 0.186),
        ("vila velha", 29101, 29124, 0.166),
        ("serra", 29160, 29178, 0.142),
        ("cariacica", 29140, 29156, 0.069),
    ),
    "GO": (
        ("goiania", 74075, 74845, 0.344),
        ("anapolis", 75048, 75135, 0.056),
        ("aparecida de goiania", 74911, 74986, 0.053),
        ("rio verde", 75901, 75909, 0.033),
    ),
    "MA": (
        ("sao luis", 65029, 65082, 0.469),
        ("imperatriz", 65900, 65919, 0.054),
        ("caxias", 65601, 65609, 0.022),
        ("balsas", 65800, 65800, 0.022),
    ),
    "MG": (
        ("belo horizonte", 30140, 31840, 0.237),
        ("contagem", 32013, 32341, 0.037),
        ("juiz de fora", 36010, 36087, 0.037),
        ("uberlandia", 38400, 38414, 0.033),
    ),
    "MS": (
        ("campo grande", 79002, 79113, 0.455),
        ("dourados", 79802, 79840, 0.085),
        ("tres lagoas", 79601, 79640, 0.059),
        ("corumba", 79300, 79333, 0.04),
    ),
    "MT": (
        ("cuiaba", 78010, 78090, 0.277),
        ("rondonopolis", 78700, 78745, 0.069),
        ("sinop", 78550, 78557, 0.05),
        ("varzea grande", 78110, 78142, 0.046),
    ),
    "PA": (
        ("belem", 66025, 66822, 0.455),
        ("ananindeua", 67013, 67143, 0.09),
        ("santarem", 68005, 68040, 0.045),
        ("altamira", 68371, 68376, 0.026),
    ),
    "PB": (
        ("joao pessoa", 58013, 58079, 0.464),
        ("campina grande", 58400, 58433, 0.13),
        ("patos", 58700, 58706, 0.031),
        ("cajazeiras", 58900, 58900, 0.023),
    ),
    "PE": (
        ("recife", 50054, 52130, 0.367),
        ("jaboatao dos guararapes", 54080, 54450, 0.083),
        ("olinda", 53030, 53370, 0.057),
        ("petrolina", 56302, 56330, 0.04),
    ),
    "PI": (
        ("teresina", 64002, 64081, 0.562),
        ("parnaiba", 64200, 64218, 0.048),
        ("picos", 64600, 64606, 0.037),
        ("floriano", 64800, 64807, 0.035),
    ),
    "PR": (
        ("curitiba", 80035, 82820, 0.3),
        ("londrina", 86010, 86084, 0.061),
        ("maringa", 87009, 87083, 0.053),
        ("cascavel", 85801, 85819, 0.03),
    ),
    "RJ": (
        ("rio de janeiro", 20230, 23087, 0.534),
        ("niteroi", 24030, 24358, 0.065),
        ("nova iguacu", 26011, 26291, 0.035),
        ("sao goncalo", 24416, 24752, 0.032),
    ),
    "RN": (
        ("natal", 59015, 59124, 0.426),
        ("parnamirim", 59140, 59158, 0.12),
        ("mossoro", 59600, 59631, 0.076),
        ("caico", 59300, 59300, 0.021),
    ),
    "RO": (
        ("porto velho", 76801, 76828, 0.438),
        ("vilhena", 76980, 76987, 0.075),
        ("ji-parana", 76900, 76913, 0.067),
        ("cacoal", 76960, 76967, 0.054),
    ),
    "RR": (
        ("boa vista", 69301, 69316, 0.978),
        ("bonfim", 69380, 69380, 0.022),
    ),
    "RS": (
        ("porto alegre", 90020, 91790, 0.251),
        ("caxias do sul", 95012, 95110, 0.04),
        ("canoas", 92020, 92425, 0.038),
        ("santa maria", 97010, 97110, 0.036),
    ),
    "SC": (
        ("florianopolis", 88010, 88085, 0.154),
        ("joinville", 89201, 89237, 0.074),
        ("blumenau", 89010, 89070, 0.052),
        ("sao jose", 88101, 88117, 0.047),
    ),
    "SE": (
        ("aracaju", 49010, 49095, 0.643),
        ("itabaiana", 49500, 49509, 0.041),
        ("nossa senhora do socorro", 49160, 49160, 0.041),
        ("lagarto", 49400, 49400, 0.032),
    ),
    "SP": (
        ("sao paulo", 1307, 8191, 0.372),
        ("campinas", 13019, 13092, 0.035),
        ("guarulhos", 7024, 7251, 0.029),
        ("sao bernardo do campo", 9624, 9892, 0.023),
    ),
    "TO": (
        ("palmas", 77001, 77060, 0.33),
        ("araguaina", 77803, 77825, 0.147),
        ("gurupi", 77402, 77433, 0.084),
        ("paraiso do tocantins", 77600, 77600, 0.037),
    ),
}
