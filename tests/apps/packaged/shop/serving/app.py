"""An app inside its project's package, importing the package absolutely (as fal-demos'
apps do); fal ships the enclosing package with the app."""

import fal
from pydantic import BaseModel

from shop.catalog import PRICES


class Order(BaseModel):
    item: str


class Shop(fal.App):
    machine_type = "XS"

    @fal.endpoint("/")
    def price(self, order: Order) -> dict:
        return {"item": order.item, "price": PRICES[order.item]}
